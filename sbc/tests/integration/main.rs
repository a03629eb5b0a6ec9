//! The library's integration tests, one binary (each test still runs in a
//! process of its own under nextest). `alloc.rs` and `tcp_memory.rs` stay
//! binaries of their own: they install a counting global allocator.

mod admin;
mod corpus;
mod media_relay;
mod roundtrip;
mod xdp;
