//! Types and pure helpers shared by the XDP program (`relay-ebpf`) and the
//! userspace loader (`sbc::media::xdp`).
//!
//! Everything here is `#![no_std]`, `#[repr(C)]` with explicit padding, and
//! free of `Option`, `bool` and enums, so that the kernel and userspace agree
//! on every byte of a map key or value. The checksum and rewrite helpers are
//! pure functions so the host can unit-test what the kernel program runs.
//!
//! Filled in by the XDP fast-path work; empty until then.
#![no_std]
