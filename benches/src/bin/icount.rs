//! Runs one benchmark operation a given number of times, for instruction
//! counting under callgrind (`scripts/icount.sh`), where wall-clock time is
//! too noisy on a shared machine. Instruction counts are repeatable for the
//! same binary and input whatever else the machine is doing.
//!
//! usage: icount OPERATION ITERATIONS

use std::hint::black_box;

use benches::{CARRIER_INVITE, anchor_sdp, fixtures};
use sbc::sip::Message;

/// The operations, by name: what is measured and on which input.
const OPERATIONS: &[&str] = &[
    "copy/invite_carrier",
    "parse/invite_carrier",
    "parse/invite_rfc3665",
    "parse/ok_200",
    "parse/longreq",
    "print/invite_carrier",
    "sdp_anchor/carrier_offer",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(operation), Some(iterations)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<u32>().ok()),
    ) else {
        eprintln!(
            "usage: icount OPERATION ITERATIONS\noperations: {}",
            OPERATIONS.join(" ")
        );
        std::process::exit(2);
    };
    let carrier = Message::parse(CARRIER_INVITE).expect("parses");
    let body = carrier.body().to_vec();
    let mut out = Vec::with_capacity(4096);
    for _ in 0..iterations {
        match operation.as_str() {
            // The baseline: what merely copying the datagram costs.
            "copy/invite_carrier" => drop(black_box(black_box(CARRIER_INVITE).to_vec())),
            "parse/invite_carrier" => drop(black_box(Message::parse(black_box(CARRIER_INVITE)))),
            "parse/invite_rfc3665" => drop(black_box(Message::parse(black_box(
                fixtures::INVITE_WITH_SDP,
            )))),
            "parse/ok_200" => drop(black_box(Message::parse(black_box(fixtures::OK_200)))),
            "parse/longreq" => drop(black_box(Message::parse(black_box(fixtures::LONGREQ)))),
            "print/invite_carrier" => {
                out.clear();
                black_box(&carrier).write_to(&mut out);
            }
            "sdp_anchor/carrier_offer" => drop(black_box(anchor_sdp(black_box(&body)))),
            other => {
                eprintln!(
                    "unknown operation {other}; operations: {}",
                    OPERATIONS.join(" ")
                );
                std::process::exit(2);
            }
        }
    }
}
