//! Fuzz stream (TCP/TLS) framing: segmentation must not change the result.
//!
//! Input layout: the first byte seeds how the rest is cut into chunks; the rest
//! is the byte stream. The stream is fed to one `StreamFramer` in those chunks
//! (draining `next_frame` after every push, as the transport does) and to a
//! second one in a single push. Up to the first error, both must yield the same
//! frames (`Frame: PartialEq`), and either both hit an error or neither does.
//!
//! Note for the framer: a lone CRLF at a chunk boundary must not turn one
//! RFC 5626 double-CRLF ping into two keep-alives; that is exactly the kind of
//! segmentation dependence this target is meant to catch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbc::sip::Limits;
use sbc::sip::framing::{Frame, StreamFramer};

/// Frames produced before the first error, and whether an error stopped the run.
fn frame_all<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Frame>, bool) {
    let mut framer = StreamFramer::new(Limits::default());
    let mut frames = Vec::new();
    for chunk in chunks {
        framer.push(chunk);
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

/// Deterministic chunk lengths derived from `seed`: 0 means one byte at a time,
/// otherwise pseudo-random lengths in 1..=(seed / 4 + 1) (so up to 64 bytes).
fn chunks(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    let max = usize::from(seed / 4) + 1;
    let mut state = u32::from(seed).wrapping_mul(0x9E37_79B9) | 1;
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let len = if seed == 0 {
            1
        } else {
            // xorshift32
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            1 + (state as usize) % max
        };
        let (head, tail) = rest.split_at(len.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = frame_all([stream]);
    let pieces = chunks(stream, seed);
    let chunked = frame_all(pieces.iter().copied());
    assert_eq!(
        chunked,
        whole,
        "framing depends on segmentation ({} chunks, seed {seed})",
        pieces.len()
    );
});
