//! Parse and print costs of the SIP and SDP cores.
//!
//! `cargo bench -p benches --bench sip` reports time per message for:
//! parsing (with every header the SBC interprets validated) and printing a
//! typical INVITE with SDP, a 200 OK, the RFC 4475 long and tortuous
//! messages, and an SDP anchoring rewrite. The targets (INVITE parse < 2 µs,
//! print < 1 µs) are read off these numbers, not asserted.

use std::hint::black_box;

use benches::{CARRIER_INVITE, fixtures};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sbc::sdp::Sdp;
use sbc::sip::Message;

fn parse_and_print(c: &mut Criterion) {
    let cases: [(&str, &[u8]); 5] = [
        ("invite_carrier_sdp", CARRIER_INVITE),
        ("invite_rfc3665_sdp", fixtures::INVITE_WITH_SDP),
        ("ok_200_sdp", fixtures::OK_200),
        ("torture_longreq", fixtures::LONGREQ),
        ("torture_wsinv", fixtures::WSINV),
    ];
    let mut group = c.benchmark_group("sip_parse");
    for (name, bytes) in cases {
        Message::parse(bytes).expect("benchmark input parses");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| b.iter(|| Message::parse(black_box(bytes))));
    }
    group.finish();

    let mut group = c.benchmark_group("sip_print");
    for (name, bytes) in cases {
        let msg = Message::parse(bytes).expect("benchmark input parses");
        let mut out = Vec::with_capacity(bytes.len() * 2);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                black_box(&msg).write_to(&mut out);
            })
        });
    }
    group.finish();

    // What a B2BUA does to every INVITE: read the dialog identifiers and the
    // Via stack, then replace the Vias, the Contact and the body.
    c.bench_function("sip_edit/invite_carrier_rewrite", |b| {
        let template = Message::parse(CARRIER_INVITE).expect("parses");
        let body = template.body().to_vec();
        b.iter(|| {
            let mut msg = template.clone();
            let via_count = msg.vias().count();
            let call_id_len = msg.call_id().map_or(0, <[u8]>::len);
            msg.replace_vias(&[b"SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK-sbc-1".as_slice()]);
            if let Some(contact) = msg.position(sbc::sip::HeaderName::Contact) {
                msg.set_header(contact, b"<sip:sbc@203.0.113.1:5060>");
            }
            msg.set_body(&body);
            black_box((via_count, call_id_len, msg.to_bytes()))
        })
    });
}

fn sdp(c: &mut Criterion) {
    let body = Message::parse(CARRIER_INVITE)
        .expect("parses")
        .body()
        .to_vec();
    c.bench_function("sdp_parse/carrier_offer", |b| {
        b.iter(|| Sdp::parse(black_box(&body)))
    });
    c.bench_function("sdp_rewrite/carrier_offer_anchor", |b| {
        b.iter(|| benches::anchor_sdp(black_box(&body)))
    });
}

criterion_group!(benches, parse_and_print, sdp);
criterion_main!(benches);
