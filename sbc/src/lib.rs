//! # sbc: a Session Border Controller with a kernel-bypass media relay
//!
//! The crate is a sans-IO core wrapped in thin IO shells:
//!
//! ```text
//!             bytes in + now                           bytes out, timers, media commands
//!   sockets ------------------> [ sip  ->  b2bua ] ---------------------------------> sockets
//!   (transport, tokio)            PURE: no IO, no clock, no RNG          (driver drains poll_*())
//! ```
//!
//! * [`sip`]: the lossless SIP message layer (RFC 3261 §7, §18.3, §19, §20, §25):
//!   parser, typed header views on demand, printer/editor, stream framing and the
//!   verdict a server owes a malformed message. Pure.
//! * [`sdp`]: the line-preserving SDP parser and rewriter (RFC 8866, RFC 3264,
//!   RFC 3605, RFC 5761). Pure.
//! * [`inspect`]: the `sbc inspect` operator tool built on the two above.
//!
//! Nothing under `sip` or `sdp` touches a socket, a clock, a runtime or an RNG:
//! inputs carry everything they need, so every behaviour is testable byte for
//! byte.
pub mod inspect;
pub mod media;
pub mod sdp;
pub mod sip;
