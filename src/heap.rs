//! The process heap of long-running commands: mimalloc keeps the memory it frees, and the heap
//! a command will need is faulted in before its clock starts.
//!
//! Why: on a VM whose host takes back free guest memory (virtio-balloon free page reporting,
//! usual in clouds), the first touch of such memory is slow. On this project's 2-core VM it cost
//! 3.1 to 3.9 ms per MiB (a 2 MiB transparent huge page stalls its thread about 7 ms), against
//! 0.15 ms per MiB for memory touched moments before; memory freed for 5 s was slow again.
//! mimalloc returns freed memory to the OS after a second by default, so under a steady share
//! load it came back slow, and each refault was a latency spike. At the start of a load the
//! heap grows by tens of MiB at once, which cost the proxy about 0.3 s of page faults.

use std::os::raw::{c_int, c_long};

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (checked by a test).
const MI_OPTION_PURGE_DELAY: c_int = 15;
/// Warm-up allocations are this large: big enough to be few, small enough for mimalloc's arenas
/// to hand the same memory back to small-object pages afterwards.
const CHUNK: usize = 1 << 20;

/// Heap the proxy faults in before serving: its working set at 20,000 shares/s (about 20 MiB
/// steady, 55 MiB at the start of a load in `deploy/loadtest.sh`), with room.
pub const PROXY_WARM: usize = 64 << 20;

/// Keeps freed heap memory in the process from now on and faults in `warm` bytes of heap.
/// Returns the bytes faulted in.
pub fn hold(warm: usize) -> usize {
    // SAFETY: sets a number in mimalloc's option table; any value is valid for this option, and
    // mimalloc reads it on each purge decision.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
    let chunks: Vec<Vec<u8>> = (0..warm.div_ceil(CHUNK))
        .map(|_| {
            // Ones, not zeros: a zeroed request may be served from fresh pages untouched.
            // black_box keeps the stores, which are to memory freed unread.
            let v = vec![1u8; CHUNK];
            std::hint::black_box(&v);
            v
        })
        .collect();
    chunks.len() * CHUNK
}

/// The purge delay mimalloc uses now, in milliseconds (-1: never).
pub fn purge_delay_ms() -> c_long {
    // SAFETY: reads a number from mimalloc's option table.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_purging_off_and_warms_whole_chunks() {
        // mimalloc's default delay is 1000 ms (or MIMALLOC_PURGE_DELAY when set): reading it
        // here before hold() checks that the index names that option.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay_ms(), 1000);
        }
        assert_eq!(hold(3 * CHUNK + 1), 4 * CHUNK);
        assert_eq!(purge_delay_ms(), -1);
        assert_eq!(hold(0), 0);
    }
}
