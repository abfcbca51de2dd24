//! The 64-byte node that caches and datasets are made of, and the FNV mixing step.

use bytemuck::{Pod, Zeroable};

#[cfg(target_endian = "big")]
compile_error!("dagproxy reads hash words as little-endian memory images");

/// One 64-byte cache or dataset node as sixteen little-endian words, cache-line aligned.
#[derive(Clone, Copy, Pod, Zeroable, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct Node(pub [u32; 16]);

impl Node {
    /// An all-zero node.
    pub const fn zeroed_node() -> Self {
        Node([0; 16])
    }

    /// The node as eight 64-bit lanes (keccak's view).
    #[inline(always)]
    pub fn lanes(&self) -> [u64; 8] {
        bytemuck::cast(self.0)
    }

    /// A node from eight 64-bit lanes.
    #[inline(always)]
    pub fn from_lanes(lanes: [u64; 8]) -> Self {
        Node(bytemuck::cast(lanes))
    }

    /// The node's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::bytes_of(self)
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({})", hex::encode(self.as_bytes()))
    }
}

/// The FNV-1 style mix ethash uses.
#[inline(always)]
pub fn fnv(a: u32, b: u32) -> u32 {
    a.wrapping_mul(0x0100_0193) ^ b
}
