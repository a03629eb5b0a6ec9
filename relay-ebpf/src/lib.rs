//! The XDP program of the media fast path.
//!
//! For UDP packets to an anchored (address, port) whose flow userspace has
//! latched, it rewrites addresses and ports, fixes checksums incrementally,
//! resolves the next hop with `bpf_fib_lookup` and forwards with `XDP_TX` or
//! `XDP_REDIRECT`; everything else is `XDP_PASS`ed to the userspace relay.
//!
//! Not yet written: the XDP fast-path issue fills this crate. It is excluded
//! from the host workspace because it only builds for `bpfel-unknown-none`.
#![no_std]
