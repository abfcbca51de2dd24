// dagproxy ethash kernels: dataset item generation from the light cache, and batch hashimoto
// over a device-resident dataset (two slots, each split over up to 4 buffers) or the light cache.
//
// Layout (little-endian, as the host's Node images):
//   cache / dataset: 64-byte items = 16 uints; a dataset row = 2 items = 32 uints (128 bytes).
//   headers: 4 ulongs per input (the 32 header-hash bytes); nonces: 1 ulong (the numeric nonce,
//   absorbed little-endian); outputs: 8 ulongs per input (mix digest 4, result 4).

#define DATASET_PARENTS 256u
#define ACCESSES 64u
#define FNV_PRIME 0x01000193u
#define fnv(a, b) (((a) * FNV_PRIME) ^ (b))

__constant ulong RC[24] = {
    0x0000000000000001UL, 0x0000000000008082UL, 0x800000000000808aUL, 0x8000000080008000UL,
    0x000000000000808bUL, 0x0000000080000001UL, 0x8000000080008081UL, 0x8000000000008009UL,
    0x000000000000008aUL, 0x0000000000000088UL, 0x0000000080008009UL, 0x000000008000000aUL,
    0x000000008000808bUL, 0x800000000000008bUL, 0x8000000000008089UL, 0x8000000000008003UL,
    0x8000000000008002UL, 0x8000000000000080UL, 0x000000000000800aUL, 0x800000008000000aUL,
    0x8000000080008081UL, 0x8000000000008080UL, 0x0000000080000001UL, 0x8000000080008008UL};

#define ROL(x, n) rotate((ulong)(x), (ulong)(n))

// Keccak-f[1600], rho and pi written out so the state stays in registers.
static void keccak_f1600(ulong *a) {
    for (int r = 0; r < 24; r++) {
        ulong c0 = a[0] ^ a[5] ^ a[10] ^ a[15] ^ a[20];
        ulong c1 = a[1] ^ a[6] ^ a[11] ^ a[16] ^ a[21];
        ulong c2 = a[2] ^ a[7] ^ a[12] ^ a[17] ^ a[22];
        ulong c3 = a[3] ^ a[8] ^ a[13] ^ a[18] ^ a[23];
        ulong c4 = a[4] ^ a[9] ^ a[14] ^ a[19] ^ a[24];
        ulong d0 = c4 ^ ROL(c1, 1);
        ulong d1 = c0 ^ ROL(c2, 1);
        ulong d2 = c1 ^ ROL(c3, 1);
        ulong d3 = c2 ^ ROL(c4, 1);
        ulong d4 = c3 ^ ROL(c0, 1);
#pragma unroll
        for (int i = 0; i < 25; i += 5) {
            a[i] ^= d0; a[i + 1] ^= d1; a[i + 2] ^= d2; a[i + 3] ^= d3; a[i + 4] ^= d4;
        }
        // rho + pi
        ulong b[25];
        b[0] = a[0];
        b[10] = ROL(a[1], 1);
        b[20] = ROL(a[2], 62);
        b[5] = ROL(a[3], 28);
        b[15] = ROL(a[4], 27);
        b[16] = ROL(a[5], 36);
        b[1] = ROL(a[6], 44);
        b[11] = ROL(a[7], 6);
        b[21] = ROL(a[8], 55);
        b[6] = ROL(a[9], 20);
        b[7] = ROL(a[10], 3);
        b[17] = ROL(a[11], 10);
        b[2] = ROL(a[12], 43);
        b[12] = ROL(a[13], 25);
        b[22] = ROL(a[14], 39);
        b[23] = ROL(a[15], 41);
        b[8] = ROL(a[16], 45);
        b[18] = ROL(a[17], 15);
        b[3] = ROL(a[18], 21);
        b[13] = ROL(a[19], 8);
        b[14] = ROL(a[20], 18);
        b[24] = ROL(a[21], 2);
        b[9] = ROL(a[22], 61);
        b[19] = ROL(a[23], 56);
        b[4] = ROL(a[24], 14);
        // chi
#pragma unroll
        for (int i = 0; i < 25; i += 5) {
            a[i] = b[i] ^ (~b[i + 1] & b[i + 2]);
            a[i + 1] = b[i + 1] ^ (~b[i + 2] & b[i + 3]);
            a[i + 2] = b[i + 2] ^ (~b[i + 3] & b[i + 4]);
            a[i + 3] = b[i + 3] ^ (~b[i + 4] & b[i]);
            a[i + 4] = b[i + 4] ^ (~b[i] & b[i + 1]);
        }
        a[0] ^= RC[r];
    }
}

// Keccak-512 of exactly 64 bytes given as 16 words, in place.
static void keccak512_64(uint *w) {
    ulong s[25];
    for (int i = 0; i < 8; i++) s[i] = (ulong)w[2 * i] | ((ulong)w[2 * i + 1] << 32);
    s[8] = 0x8000000000000001UL;
    for (int i = 9; i < 25; i++) s[i] = 0;
    keccak_f1600(s);
    for (int i = 0; i < 8; i++) {
        w[2 * i] = (uint)s[i];
        w[2 * i + 1] = (uint)(s[i] >> 32);
    }
}

// One dataset item from the light cache (`n` nodes).
static void dataset_item(__global const uint *cache, uint n, uint index, uint *mix) {
    __global const uint *c = cache + (size_t)(index % n) * 16;
    for (int w = 0; w < 16; w++) mix[w] = c[w];
    mix[0] ^= index;
    keccak512_64(mix);
    // Unrolled by 16 so `mix` is only indexed by constants (registers, not local memory, on
    // GPUs).
    for (uint j0 = 0; j0 < DATASET_PARENTS; j0 += 16) {
#pragma unroll
        for (uint k = 0; k < 16; k++) {
            uint parent = fnv(index ^ (j0 + k), mix[k]) % n;
            __global const uint4 *p = (__global const uint4 *)(cache + (size_t)parent * 16);
#pragma unroll
            for (int q = 0; q < 4; q++) {
                uint4 v = p[q];
                mix[4 * q] = fnv(mix[4 * q], v.x);
                mix[4 * q + 1] = fnv(mix[4 * q + 1], v.y);
                mix[4 * q + 2] = fnv(mix[4 * q + 2], v.z);
                mix[4 * q + 3] = fnv(mix[4 * q + 3], v.w);
            }
        }
    }
    keccak512_64(mix);
}

// Items `buf_first + start + gid` for gid < count, written to `out[start + gid]`.
// `out` is one buffer of a (possibly split) dataset whose first item is `buf_first`.
__kernel void dag_items(__global const uint *cache, uint cache_nodes, __global uint *out,
                        ulong buf_first, ulong start, uint count) {
    uint gid = get_global_id(0);
    if (gid >= count) return;
    ulong local_index = start + gid;
    uint mix[16];
    dataset_item(cache, cache_nodes, (uint)(buf_first + local_index), mix);
    __global uint4 *o = (__global uint4 *)(out + local_index * 16);
    for (int q = 0; q < 4; q++)
        o[q] = (uint4)(mix[4 * q], mix[4 * q + 1], mix[4 * q + 2], mix[4 * q + 3]);
}

// Seed = keccak512(header || nonce_le) into s[0..8].
static void seed_of(__global const ulong *header, ulong nonce, ulong *s) {
    for (int i = 0; i < 4; i++) s[i] = header[i];
    s[4] = nonce;
    s[5] = 0x01;
    for (int i = 6; i < 25; i++) s[i] = 0;
    s[8] = 0x8000000000000000UL;
    keccak_f1600(s);
}

// Compresses the mix and writes (mix digest, keccak256(seed || cmix)).
static void finish(ulong *s, const uint *mix, __global ulong *out) {
    uint cmix[8];
    for (int i = 0; i < 8; i++)
        cmix[i] = fnv(fnv(fnv(mix[4 * i], mix[4 * i + 1]), mix[4 * i + 2]), mix[4 * i + 3]);
    for (int i = 0; i < 4; i++) {
        ulong c = (ulong)cmix[2 * i] | ((ulong)cmix[2 * i + 1] << 32);
        out[i] = c;
        s[8 + i] = c;
    }
    s[12] = 0x01;
    for (int i = 13; i < 25; i++) s[i] = 0;
    s[16] = 0x8000000000000000UL;
    keccak_f1600(s);
    for (int i = 0; i < 4; i++) out[4 + i] = s[i];
}

static void mix_row(uint *mix, __global const uint *row) {
    __global const uint4 *r = (__global const uint4 *)row;
#pragma unroll
    for (int q = 0; q < 8; q++) {
        uint4 v = r[q];
        mix[4 * q] = fnv(mix[4 * q], v.x);
        mix[4 * q + 1] = fnv(mix[4 * q + 1], v.y);
        mix[4 * q + 2] = fnv(mix[4 * q + 2], v.z);
        mix[4 * q + 3] = fnv(mix[4 * q + 3], v.w);
    }
}

// Row `row` of a dataset split into buffers of `split` rows each.
static __global const uint *row_ptr(uint row, uint split, __global const uint *d0,
                                    __global const uint *d1, __global const uint *d2,
                                    __global const uint *d3) {
    uint b = row / split;
    size_t off = (size_t)(row - b * split) * 32;
    switch (b) {
    case 0: return d0 + off;
    case 1: return d1 + off;
    case 2: return d2 + off;
    default: return d3 + off;
    }
}

// Batch hashimoto over resident datasets: input i uses slot `slots[i]` (0 or 1). Each slot has
// `rows` rows split into buffers of `split` rows.
__kernel void hashimoto_full(__global const ulong *headers, __global const ulong *nonces,
                             __global const uint *slots, __global ulong *out, uint count,
                             uint rows0, uint split0, __global const uint *a0,
                             __global const uint *a1, __global const uint *a2,
                             __global const uint *a3, uint rows1, uint split1,
                             __global const uint *b0, __global const uint *b1,
                             __global const uint *b2, __global const uint *b3) {
    uint gid = get_global_id(0);
    if (gid >= count) return;
    uint slot = slots[gid];
    uint rows = slot ? rows1 : rows0;
    uint split = slot ? split1 : split0;
    ulong s[25];
    seed_of(headers + (size_t)gid * 4, nonces[gid], s);
    uint mix[32];
    for (int i = 0; i < 8; i++) {
        mix[2 * i] = (uint)s[i];
        mix[2 * i + 1] = (uint)(s[i] >> 32);
    }
    for (int i = 0; i < 16; i++) mix[16 + i] = mix[i];
    uint s0 = mix[0];
    // Unrolled by 32 so `mix` is only indexed by constants.
    for (uint i0 = 0; i0 < ACCESSES; i0 += 32) {
#pragma unroll
        for (uint k = 0; k < 32; k++) {
            uint row = fnv((i0 + k) ^ s0, mix[k]) % rows;
            __global const uint *p = slot ? row_ptr(row, split, b0, b1, b2, b3)
                                          : row_ptr(row, split, a0, a1, a2, a3);
            mix_row(mix, p);
        }
    }
    finish(s, mix, out + (size_t)gid * 8);
}

// Batch hashimoto from the light cache (an epoch without a resident dataset).
__kernel void hashimoto_light(__global const ulong *headers, __global const ulong *nonces,
                              __global ulong *out, uint count, __global const uint *cache,
                              uint cache_nodes, uint rows) {
    uint gid = get_global_id(0);
    if (gid >= count) return;
    ulong s[25];
    seed_of(headers + (size_t)gid * 4, nonces[gid], s);
    uint mix[32];
    for (int i = 0; i < 8; i++) {
        mix[2 * i] = (uint)s[i];
        mix[2 * i + 1] = (uint)(s[i] >> 32);
    }
    for (int i = 0; i < 16; i++) mix[16 + i] = mix[i];
    uint s0 = mix[0];
    uint item[16];
    for (uint i = 0; i < ACCESSES; i++) {
        uint row = fnv(i ^ s0, mix[i % 32]) % rows;
        for (uint h = 0; h < 2; h++) {
            dataset_item(cache, cache_nodes, 2 * row + h, item);
            for (int w = 0; w < 16; w++) mix[16 * h + w] = fnv(mix[16 * h + w], item[w]);
        }
    }
    finish(s, mix, out + (size_t)gid * 8);
}
