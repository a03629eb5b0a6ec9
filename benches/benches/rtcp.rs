//! The cost of hiding RTCP SDES in the userspace relay.
//!
//! `cargo bench -p benches --bench rtcp` reports time per packet for the
//! rewrite ([`sbc::media::rtcp::hide_sdes`]) of typical compound packets: a
//! softphone's SR + SDES (CNAME `user@private-IP`, NAME, TOOL), a receiver's
//! RR + SDES (CNAME only), and a compound without SDES; beside each, the
//! copy into the relay's scratch buffer the rewrite replaces, so the
//! rewrite's own cost reads as the difference. Each SDES-carrying packet
//! costs one keyed hash (SipHash) of the CNAME plus a walk of its items.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sbc::media::cname::CnameMask;
use sbc::media::rtcp::hide_sdes;

/// An RTCP packet of type `pt` with `body` (a multiple of 4 octets) and
/// count `count`.
fn packet(count: u8, pt: u8, body: &[u8]) -> Vec<u8> {
    let words = u16::try_from(body.len() / 4).expect("short body");
    let mut p = vec![0x80 | count, pt];
    p.extend_from_slice(&words.to_be_bytes());
    p.extend_from_slice(body);
    p
}

/// One SDES chunk for `ssrc` with `items`, END and padding.
fn sdes(ssrc: u32, items: &[(u8, &[u8])]) -> Vec<u8> {
    let mut body = ssrc.to_be_bytes().to_vec();
    for (kind, text) in items {
        body.push(*kind);
        body.push(u8::try_from(text.len()).expect("short item"));
        body.extend_from_slice(text);
    }
    body.push(0);
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    packet(1, 202, &body)
}

fn hide(c: &mut Criterion) {
    let ssrc = 0x1234_5678u32;
    // SR: sender info (20 octets) and one report block (24).
    let mut sr_body = ssrc.to_be_bytes().to_vec();
    sr_body.resize(4 + 20 + 24, 0x11);
    let mut rr_body = ssrc.to_be_bytes().to_vec();
    rr_body.resize(4 + 24, 0x22);
    let softphone = [
        packet(1, 200, &sr_body),
        sdes(
            ssrc,
            &[
                (1, b"alice@192.168.1.20"),
                (2, b"Alice Example"),
                (6, b"PhoneAgent 3.1.4 (Linux)"),
            ],
        ),
    ]
    .concat();
    let receiver = [
        packet(1, 201, &rr_body),
        sdes(ssrc, &[(1, b"{9c3f0e6e-5a1b-4e1c-8f7e-0a1b2c3d4e5f}")]),
    ]
    .concat();
    let no_sdes = [
        packet(1, 201, &rr_body),
        packet(0, 203, &ssrc.to_be_bytes()),
    ]
    .concat();
    let mask = CnameMask::new();
    let mut out = Vec::with_capacity(1500);
    let mut group = c.benchmark_group("rtcp");
    for (name, bytes) in [
        ("sr_sdes_cname_name_tool", &softphone),
        ("rr_sdes_cname", &receiver),
        ("rr_bye_no_sdes", &no_sdes),
    ] {
        hide_sdes(bytes, &mask, &mut out).expect("benchmark input parses");
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("hide_sdes/{name}"), |b| {
            b.iter(|| hide_sdes(black_box(bytes), &mask, &mut out))
        });
        group.bench_function(format!("copy/{name}"), |b| {
            b.iter(|| {
                out.clear();
                out.extend_from_slice(black_box(bytes));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hide);
criterion_main!(benches);
