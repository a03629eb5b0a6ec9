//! What the heap holds, counted: parsing allocates nothing per header (a
//! message owns its byte buffer and one vector of header spans, and every
//! typed view borrows from them), and a held call costs the signaling core a
//! bounded number of bytes.
//!
//! Counted with a global allocator wrapper, which needs `unsafe impl
//! GlobalAlloc`; this test binary is the only place the workspace allows it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use sbc::harness::{CALLS_CONFIG, Sim};
use sbc::sip::{HeaderName, Message};

struct Counting;

thread_local! {
    // Per thread, so tests running in parallel don't count each other's
    // allocations; const-initialised, so reading it never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    // Bytes this thread allocated minus those it freed, as requested, and
    // as glibc malloc lays them out (see `chunk`).
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static LIVE_CHUNKS: Cell<isize> = const { Cell::new(0) };
}

fn count_one() {
    ALLOCATIONS.with(|c| c.set(c.get() + 1));
}

/// The size of the glibc malloc chunk that serves `size` bytes on x86-64:
/// 8 bytes of header, rounded up to 16, at least 32. Close enough to tell
/// many small allocations from one big one.
fn chunk(size: usize) -> isize {
    (size + 8).div_ceil(16).max(2) as isize * 16
}

fn live(delta: isize, chunk_delta: isize) {
    // `try_with`: a thread's last frees may run after its locals are gone.
    let _ = LIVE.try_with(|c| c.set(c.get() + delta));
    let _ = LIVE_CHUNKS.try_with(|c| c.set(c.get() + chunk_delta));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// wrapper only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        live(layout.size() as isize, chunk(layout.size()));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        live(-(layout.size() as isize), -chunk(layout.size()));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        live(
            new_size as isize - layout.size() as isize,
            chunk(new_size) - chunk(layout.size()),
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (ALLOCATIONS.with(Cell::get) - before, out)
}

const INVITE: &[u8] =
    include_bytes!("fixtures/corpus/flows/rfc3665/3.1-F01-INVITE_Alice_to_Bob.sip");
const LONGREQ: &[u8] = include_bytes!("fixtures/corpus/rfc4475/longreq.dat");

#[test]
fn parsing_allocates_the_buffer_and_the_header_table_only() {
    for (name, bytes) in [("invite", INVITE), ("longreq", LONGREQ)] {
        let (count, msg) = allocations_during(|| Message::parse(bytes).expect("parses"));
        let headers = msg.headers().count();
        // One Vec<u8> for the bytes, one Vec for the header table, which
        // grows by doubling from 16 entries: one reallocation per doubling.
        let table_growth = headers.div_ceil(16).next_power_of_two().ilog2() as usize;
        assert!(
            count <= 2 + table_growth,
            "{name}: {count} allocations for {headers} headers"
        );
    }
}

#[test]
fn typed_views_allocate_nothing() {
    let msg = Message::parse(LONGREQ).expect("parses");
    let (count, _) = allocations_during(|| {
        let vias = msg.vias().filter(Result::is_ok).count();
        let from = msg.from().and_then(|f| f.tag().map(str::len));
        let to = msg.to().map(|t| t.uri().as_bytes().len());
        let cseq = msg.cseq().map(|c| c.seq);
        let call_id = msg.call_id().map(<[u8]>::len);
        let contacts = msg.contacts().count();
        let ct = msg.header(HeaderName::ContentType).map(<[u8]>::len);
        (vias, from, to, cseq, call_id, contacts, ct)
    });
    assert_eq!(count, 0, "typed views must borrow, not allocate");
}

// ---- bytes per held call ---------------------------------------------------

fn live_bytes() -> (isize, isize) {
    (LIVE.with(Cell::get), LIVE_CHUNKS.with(Cell::get))
}

/// Heap bytes per call (requested, and as malloc chunks) while `calls`
/// confirmed calls are up: just after setup (their INVITE transactions still
/// in RFC 6026's Accepted state for 64*T1) and once those have ended.
fn bytes_per_held_call(calls: u32) -> ((f64, f64), (f64, f64)) {
    let mut sim = Sim::new();
    // One call first, so one-time allocations (queues, scratch buffers)
    // don't count as per-call bytes.
    sim.call(0);
    sim.advance(Duration::from_secs(40));
    let before = live_bytes();
    for n in 1..=calls {
        sim.call(n);
    }
    let fresh = live_bytes();
    assert_eq!(sim.core.active_calls(), calls as usize + 1);
    sim.advance(Duration::from_secs(40));
    assert_eq!(sim.core.active_calls(), calls as usize + 1, "calls stay up");
    let settled = live_bytes();
    let per = |(a, b): (isize, isize)| {
        (
            (a - before.0) as f64 / f64::from(calls),
            (b - before.1) as f64 / f64::from(calls),
        )
    };
    let out = (per(fresh), per(settled));
    drop(sim);
    out
}

#[test]
fn a_held_call_costs_the_signaling_core_a_bounded_number_of_bytes() {
    // 1000 calls: hash tables grow by doubling, so their share per call
    // depends on where the count falls between two sizes; over 1000 calls
    // that swing stays within a few hundred bytes per call.
    let calls = 1000;
    let ((fresh, fresh_chunks), (settled, settled_chunks)) = bytes_per_held_call(calls);
    println!(
        "bytes per confirmed call, {calls} calls: just set up {fresh:.0} \
         ({fresh_chunks:.0} in malloc chunks), after 40 s {settled:.0} ({settled_chunks:.0})"
    );
    // About 4.2 KB when this was written, and 9.8 KB before: every call kept
    // its whole INVITE, its `Call` lived inline in a table with up to as many
    // empty slots again, and so did each transaction. The bound leaves room
    // for a table growing at a different point and a field or two, and
    // fails for any one of those coming back (each over 1 KB per call). The
    // daemon's RSS per held call follows this number plus the media relay's
    // and the admin view's share (`cargo bench -p benches --bench signaling`).
    assert!(
        fresh < 5000.0,
        "{fresh:.0} bytes per call just after setup (bound 5000)"
    );
    // Once the INVITE transactions are gone (64*T1) a call holds less.
    assert!(
        settled < fresh,
        "{settled:.0} bytes per call 40 s on, {fresh:.0} just after setup"
    );
}

#[test]
fn a_registered_phone_costs_the_signaling_core_a_bounded_number_of_bytes() {
    let config = CALLS_CONFIG.replace(
        "networks = [\"203.0.113.0/24\"]",
        "networks = [\"203.0.113.0/24\"]\n\
         access = { registrar = \"pbx\", keepalive_secs = 0, max_bindings_per_aor = 1, \
         max_bindings_per_source = 2000 }",
    );
    let mut sim = Sim::with(&config);
    sim.register(0);
    sim.advance(Duration::from_secs(40));
    let before = live_bytes();
    let phones = 1000;
    for n in 1..=phones {
        sim.register(n);
    }
    // Once the REGISTER transactions are gone (64*T1).
    sim.advance(Duration::from_secs(40));
    let after = live_bytes();
    assert_eq!(sim.core.registrations_per_realm()[0].1, phones as usize + 1);
    let per = (after.0 - before.0) as f64 / f64::from(phones);
    let per_chunks = (after.1 - before.1) as f64 / f64::from(phones);
    println!(
        "bytes per registered phone, {phones} phones: {per:.0} ({per_chunks:.0} in malloc chunks)"
    );
    // (Every phone registers from one source: its cap is raised.) A binding
    // holds its AOR, Contact, token, REGISTER dialog and the phone's
    // credentials (none here), and an entry in seven indexes: about
    // 1,960 bytes when this was written (100,000 phones: about 200 MB). The
    // bound leaves room for a table growing at another point.
    assert!(
        per < 3000.0,
        "{per:.0} bytes per registered phone (bound 3000)"
    );
    drop(sim);
}
