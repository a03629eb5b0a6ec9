//! Parsing allocates nothing per header: a message owns its byte buffer and
//! one vector of header spans, and every typed view borrows from them.
//!
//! Counted with a global allocator wrapper, which needs `unsafe impl
//! GlobalAlloc`; this test binary is the only place the workspace allows it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use sbc::sip::{HeaderName, Message};

struct Counting;

thread_local! {
    // Per thread, so tests running in parallel don't count each other's
    // allocations; const-initialised, so reading it never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    ALLOCATIONS.with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// wrapper only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
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
