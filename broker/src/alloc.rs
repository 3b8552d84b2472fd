//! The process allocator: the system allocator, except that allocations of
//! [`LARGE`] bytes or more are anonymous `MAP_NORESERVE` mappings.
//!
//! Why: the Kafka protocol decoder (`kafka-protocol`) sizes a `Vec` by the element
//! count a request states before reading any element, so one frame claiming 2^31
//! elements asks for tens of gigabytes; the system allocator refuses, and a refused
//! allocation aborts the whole broker (found by `kafka::fuzz_tests`). A `MAP_NORESERVE`
//! mapping only reserves address space — pages are committed when touched — so the
//! decoder's claim costs nothing, the decode then fails at the end of the frame, and the
//! request is refused on its connection. Legitimate allocations this large do not occur
//! in the broker (batches are bounded by `max.message.bytes`, fetches by
//! `FETCH_RESPONSE_BYTES_MAX`). Under `vm.overcommit_memory=2` such mappings count
//! against the commit limit again and a lying frame can still abort the process.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations from this size up are lazily committed mappings.
pub const LARGE: usize = 1 << 30;
const PAGE: usize = 4096;

pub struct Allocator;

fn is_mapped(layout: &Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= PAGE
}

// SAFETY: every block comes from `System` or from `mmap` and goes back to the one it
// came from: `is_mapped` depends only on the layout, which callers must pass unchanged
// to `dealloc` and `realloc`.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_mapped(&layout) {
            // SAFETY: forwarded as received.
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: a fresh anonymous private mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p.cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_mapped(&layout) {
            // SAFETY: anonymous mappings are zero-filled.
            unsafe { self.alloc(layout) }
        } else {
            // SAFETY: forwarded as received.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_mapped(&layout) {
            // SAFETY: `ptr` is the start of a mapping of `layout.size()` bytes made by
            // `alloc` (the caller passes the layout it allocated with).
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: forwarded as received.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid
        // layout (GlobalAlloc::realloc's contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_mapped(&layout) && !is_mapped(&new_layout) {
            // SAFETY: forwarded as received.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: a new block, the overlap copied, the old block freed with the layout
        // it was allocated with.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    /// A claim for far more memory than the machine has costs address space only.
    #[test]
    fn a_huge_claim_is_granted_and_returned() {
        let v: Vec<[u8; 64]> = Vec::with_capacity(1 << 30); // 64 GiB
        assert!(v.capacity() >= 1 << 30);
        let mut small: Vec<u8> = vec![7; 10];
        small.reserve_exact(super::LARGE); // moved into a mapping, contents kept
        assert!(small.capacity() >= super::LARGE + 10);
        assert_eq!(small, vec![7; 10]);
        small.push(8);
        small.shrink_to_fit(); // and back
        assert_eq!(small.len(), 11);
        assert_eq!(small[10], 8);
    }
}
