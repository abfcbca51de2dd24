//! Node buffers for caches and datasets: large ones are anonymous memory mappings with
//! transparent huge pages requested, because hashimoto's random reads over a GiB-sized dataset
//! are otherwise bound by page walks (measured here: about twice the full-hash rate with them).

use std::ops::{Deref, DerefMut};

use super::node::Node;

/// Below this, a plain heap vector (huge pages would not pay).
const MAP_THRESHOLD: usize = 4 << 20;
/// Huge page size the mapping is aligned to.
const HUGE_PAGE: usize = 2 << 20;

/// Asks the CPU to start loading every cache line of `v`, so that several random reads are
/// in flight before the first is used (hashimoto rows, dataset parents).
#[inline(always)]
pub fn prefetch<T>(v: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = (v as *const T).cast::<i8>();
        let mut off = 0;
        while off < std::mem::size_of::<T>() {
            // SAFETY: a prefetch is only a hint and never faults; the address lies inside `v`.
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p.add(off));
            }
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// A zero-initialised, fixed-length buffer of nodes.
pub struct NodeBuf {
    inner: Inner,
}

enum Inner {
    Heap(Vec<Node>),
    #[cfg(target_os = "linux")]
    Mapped(mapped::Mapping),
}

impl NodeBuf {
    /// `len` zeroed nodes; mapped with huge pages requested when large.
    pub fn zeroed(len: usize) -> Self {
        #[cfg(target_os = "linux")]
        if len * std::mem::size_of::<Node>() >= MAP_THRESHOLD {
            if let Some(m) = mapped::Mapping::new(len) {
                return Self {
                    inner: Inner::Mapped(m),
                };
            }
        }
        Self {
            inner: Inner::Heap(bytemuck::zeroed_vec(len)),
        }
    }
}

impl From<Vec<Node>> for NodeBuf {
    fn from(v: Vec<Node>) -> Self {
        Self {
            inner: Inner::Heap(v),
        }
    }
}

impl Deref for NodeBuf {
    type Target = [Node];

    fn deref(&self) -> &[Node] {
        match &self.inner {
            Inner::Heap(v) => v,
            #[cfg(target_os = "linux")]
            Inner::Mapped(m) => m.as_slice(),
        }
    }
}

impl DerefMut for NodeBuf {
    fn deref_mut(&mut self) -> &mut [Node] {
        match &mut self.inner {
            Inner::Heap(v) => v,
            #[cfg(target_os = "linux")]
            Inner::Mapped(m) => m.as_mut_slice(),
        }
    }
}

impl std::fmt::Debug for NodeBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            Inner::Heap(_) => "heap",
            #[cfg(target_os = "linux")]
            Inner::Mapped(_) => "mapped",
        };
        write!(f, "NodeBuf({kind}, {} nodes)", self.len())
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod mapped {
    use super::{Node, HUGE_PAGE};

    /// An anonymous private mapping holding `len` nodes at a huge-page-aligned address.
    pub(super) struct Mapping {
        base: *mut libc::c_void,
        map_len: usize,
        nodes: *mut Node,
        len: usize,
    }

    // SAFETY: the mapping is exclusively owned memory, like a Vec's buffer.
    unsafe impl Send for Mapping {}
    // SAFETY: shared access is read-only through &self.
    unsafe impl Sync for Mapping {}

    impl Mapping {
        pub(super) fn new(len: usize) -> Option<Self> {
            let bytes = len.checked_mul(std::mem::size_of::<Node>())?;
            let map_len = bytes.checked_add(HUGE_PAGE)?;
            // SAFETY: a fresh anonymous mapping; no existing memory is touched.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    map_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return None;
            }
            let aligned = (base as usize).div_ceil(HUGE_PAGE) * HUGE_PAGE;
            let nodes = aligned as *mut Node;
            // SAFETY: [aligned, aligned + bytes) lies inside the mapping. Advice only; failure
            // (THP disabled) just leaves 4 KiB pages. Done before any page is touched.
            unsafe {
                libc::madvise(nodes.cast(), bytes, libc::MADV_HUGEPAGE);
            }
            Some(Self {
                base,
                map_len,
                nodes,
                len,
            })
        }

        pub(super) fn as_slice(&self) -> &[Node] {
            // SAFETY: `nodes` is 64-byte aligned (2 MiB in fact), valid for `len` nodes of
            // zero-initialised memory (anonymous mappings are zero-filled; Node is Pod).
            unsafe { std::slice::from_raw_parts(self.nodes, self.len) }
        }

        pub(super) fn as_mut_slice(&mut self) -> &mut [Node] {
            // SAFETY: as above, and &mut self gives exclusive access.
            unsafe { std::slice::from_raw_parts_mut(self.nodes, self.len) }
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: unmaps exactly the region mmap returned; no slice outlives self.
            unsafe {
                libc::munmap(self.base, self.map_len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_buffers_are_zeroed_and_writable() {
        for len in [0usize, 3, (MAP_THRESHOLD / 64) + 5] {
            let mut b = NodeBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|n| n.0 == [0; 16]));
            if let Some(last) = b.last_mut() {
                last.0[15] = 7;
            }
            assert_eq!(b.last().map(|n| n.0[15]), (len > 0).then_some(7));
        }
    }
}
