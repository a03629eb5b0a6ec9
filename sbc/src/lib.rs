//! # sbc: a Session Border Controller with a kernel-bypass media relay
//!
//! The crate is a sans-IO core wrapped in thin IO shells:
//!
//! ```text
//!                 bytes in + now                               bytes out, timers
//!   transport ----------------------> [ sip -> b2bua ] ---------------------------> transport
//!   (tokio)                             PURE: no IO,        media commands ^  | media events
//!                                       no clock, no RNG                   |  v
//!   daemon: one task owns the core and drains poll_*()      media relay (mio thread, XDP)
//! ```
//!
//! Pure (sans-IO, deterministic, tested by simulation):
//! * [`sip`]: the lossless SIP message layer (RFC 3261 §7, §18.3, §19, §20,
//!   §25): parser, typed header views, printer/editor, stream framing, the
//!   verdict a server owes a malformed message, and the §17 transaction layer.
//! * [`sdp`]: the line-preserving SDP parser and rewriter (RFC 8866, RFC 3264,
//!   RFC 3605, RFC 5761).
//! * [`b2bua`]: call control: two legs per call, routing and failover,
//!   admission, topology hiding, SDP anchoring through media commands.
//! * [`media`]: the media command/event interface, port allocation and the
//!   flow/latching rules; plus its backends (below).
//! * [`deadlines`]: the timers of those engines, filed and taken in O(1).
//!
//! IO shells:
//! * [`transport`]: UDP/TCP/TLS listeners per realm (tokio + socket2,
//!   tokio-rustls), RFC 3581; [`tls`] reads the certificates it presents.
//! * [`media`]`::userspace`: the relay thread (mio) that owns media sockets;
//!   `media::xdp`: the XDP program's loader and maps (aya).
//! * [`dns`]: RFC 3263 trunk names (NAPTR, SRV, A/AAAA over hickory) resolved
//!   in the daemon's tasks; the pure part orders SRV targets and caches by TTL.
//! * [`guard`]: the per-source shield (rates, bans, trust) the transport
//!   screens with before parsing; pure like the core, shared by the tasks.
//! * [`daemon`]: wires config, transports, core, relay, admin and CDRs;
//!   signals (SIGTERM drain, SIGHUP reload).
//! * [`admin`] and [`metrics`]: `/metrics`, `/health`, `/calls` from a
//!   registry the daemon owns.
//! * [`cdr`]: call detail records (bounded, never-blocking writer thread).
//! * [`logging`]: the `tracing` subscriber; [`sched`]: the threads'
//!   real-time scheduling class and CPUs.
//!
//! Tools: [`config`] (typed TOML, validated once, errors naming file, line
//! and field; `sbc check-config`) and [`inspect`] (`sbc inspect`).
pub mod admin;
pub mod b2bua;
pub mod cdr;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod deadlines;
pub mod dns;
pub mod guard;
pub mod harness;
pub mod idmap;
pub mod inspect;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod ng;
pub mod sched;
pub mod sdp;
#[cfg(test)]
mod sim;
pub mod sip;
pub mod state;
pub mod tls;
pub mod transport;
