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
//! * [`config`]: the typed TOML configuration, validated once, with errors that
//!   name the file, line and field. Reads a file only when asked to load one.
//! * [`media`]: media anchoring: the command/event interface the call core
//!   drives, port allocation and the flow/latching rules (pure), and the
//!   userspace relay (a mio thread that owns the UDP sockets).
//! * [`inspect`]: the `sbc inspect` operator tool built on the two above.
//! * [`cdr`]: call detail records and their bounded, never-blocking file
//!   writer (an IO shell with its own thread).
//! * [`logging`]: the `tracing` subscriber: filter precedence, text or JSON,
//!   and what may be logged at which level.
//!
//! Nothing under `sip` or `sdp` touches a socket, a clock, a runtime or an RNG:
//! inputs carry everything they need, so every behaviour is testable byte for
//! byte.
pub mod admin;
pub mod b2bua;
pub mod cdr;
pub mod config;
pub mod daemon;
pub mod inspect;
pub mod media;
pub mod logging;
pub mod metrics;
pub mod sdp;
pub mod sip;
pub mod transport;
