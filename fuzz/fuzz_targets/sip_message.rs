//! Fuzz the lossless SIP parser and printer.
//!
//! Properties:
//! - `Message::parse` never panics, whatever the bytes;
//! - every rejection maps to a verdict (`ParseError::response`) without panicking;
//! - print -> parse -> print is a fixed point: what we print must reparse, and
//!   reprinting it gives the same bytes (hickory's `fuzz_targets/message.rs` idea).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbc::sip::Message;

fuzz_target!(|data: &[u8]| {
    match Message::parse(data) {
        Ok(msg) => {
            let out = msg.to_bytes();
            let again = Message::parse(&out).expect("printed message must reparse");
            assert_eq!(again.to_bytes(), out, "print(parse(print(m))) != print(m)");
        }
        // The verdict path (which 4xx/5xx or drop) must be total too.
        Err(e) => {
            std::hint::black_box(e.response());
        }
    }
});
