//! The rtpengine "ng" control protocol: other SIP proxies (Kamailio's and
//! OpenSIPS' `rtpengine` modules) drive this relay's media anchoring as they
//! drive rtpengine, so the SBC can be a media-only node under an existing
//! signaling tier.
//!
//! Owns: the wire format ([`codec`]: `<cookie> <bencode or JSON dict>`,
//! bounded), reading requests ([`request`]: parsed keys and `rtpp-flags`),
//! the sans-IO state machine ([`engine`]: sessions, reply cache, media
//! commands) and the sockets ([`server`]: UDP, and TCP as rtpengine's
//! `--listen-tcp-ng`).
//!
//! May not: rewrite SDP or latch media by itself: it reuses the B2BUA's
//! anchoring functions and the one media relay (and its XDP fast path) the
//! daemon runs.
pub mod codec;
mod config;
pub mod engine;
pub mod request;
pub mod server;
pub mod service;

pub use engine::{NgEngine, NgRealm, NgSettings, Reply, ReplyTo};
