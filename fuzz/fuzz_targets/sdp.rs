//! Fuzz the line-preserving SDP parser.
//!
//! Properties: `Sdp::parse` never panics, and an SDP that parsed and was not
//! edited prints back byte-identical to its input (lossless round trip).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sdp) = sbc::sdp::Sdp::parse(data) {
        let out = sdp.to_bytes();
        // Unedited SDP must print byte for byte what came in.
        assert_eq!(out, data, "unedited SDP did not print byte-identical");
    }
});
