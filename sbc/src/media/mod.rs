//! Media anchoring: every RTP/RTCP stream of a call flows through the SBC.
//!
//! Owns: the interface the call core drives ([`command`]: `MediaCommand` in,
//! `MediaEvent` out), port allocation per realm media address ([`ports`]),
//! the latching rules ([`latch`]) and the flow table that applies them to
//! every packet ([`flow`]), all pure (no IO, `now` as input) and shared by
//! every backend; and the backends that move packets: [`userspace`] (a mio
//! thread owning UDP sockets; the fallback and the slow path of XDP) and
//! [`xdp`] (the loader and maps of the kernel fast path, aya).
//!
//! A fast path (the XDP backend) plugs into the userspace relay through
//! [`userspace::FastPath`]: the relay, the only place a source is learned,
//! pushes the flows that may bypass it ([`flow::FlowTable::fast_flows`]:
//! latched, routable, allowed by the directions) whenever they change, and
//! takes the fast path's packet counts in so counters and inactivity
//! timeouts cover both paths.
//!
//! May not: parse or write SDP (the call core maps SDP to commands), decide
//! call policy (a timeout is reported, the core hangs up), or run on the
//! tokio runtime (the relay has its own thread).
//!
//! Implements RFC 3550 §11 (even RTP/odd RTCP ports), RFC 5761 (RTP/RTCP
//! mux), RFC 4961 (symmetric RTP) with RTPBleed defences, RFC 3264 §5.1/§8.4
//! (directions and hold).
pub mod cname;
pub mod command;
pub mod fast;
pub mod flow;
pub mod latch;
pub mod ports;
pub mod reserve;
pub mod rtcp;
pub mod userspace;
pub mod xdp;
