/* wgmma.cuh: Hopper warpgroup MMA (wgmma.mma_async, sm_90a only) wrappers
 * and the shared-memory descriptor of the 128-byte-swizzled layout
 * (sw128_rows in mla_tc_parts.cuh). Not a kernel; use only in code compiled
 * under __CUDA_ARCH_FEAT_SM90_ALL.
 *
 * A warpgroup is 4 consecutive warps (128 threads). m64nNk16 multiplies a
 * 64x16 A by a 16xN B into a 64xN f32 D that the warpgroup holds in
 * registers: warp w of the group has rows 16w..16w+15 and, per 8 columns
 * j, the m16n8 C fragment of mma.sync (d[4j], d[4j+1]: row g, columns
 * 8j + 2c, +1; d[4j+2], d[4j+3]: row g + 8; g = lane / 4, c = lane % 4).
 * A from registers takes mma.sync's m16k16 A fragment per warp.
 *
 * The ops are asynchronous: wg_fence() before the first one of a batch
 * (orders earlier register writes of D and A), wg_commit() after the last,
 * wg_wait<0>() before D is read, then reg_fence(D) so the compiler reads D
 * only after the wait. */
#ifndef DS_CUDA_WGMMA_CUH
#define DS_CUDA_WGMMA_CUH

#include <stdint.h>

namespace {

/* Descriptor of a tile in sw128 layout starting at shared address saddr
 * (the tile's 1024-byte-aligned base plus at most 96 bytes to step K by 16
 * within an atom, plus multiples of 1024 to step rows by 8):
 * bits 0-13 address / 16, 16-29 leading byte offset / 16, 32-45 stride
 * byte offset / 16, 62-63 swizzle (1: 128 bytes). Both offsets are 1024:
 * the stride from one group of 8 rows (K-major) or of 8 k (MN-major) to the
 * next is 1024 bytes in sw128, and the other offset (the step between
 * 64-element atoms along MN for an MN-major operand, unused for K-major) is
 * never taken because every operand here is at most one atom wide along
 * MN-major's contiguous dimension. */
__device__ __forceinline__ uint64_t sw128_desc(uint32_t saddr) {
    return (uint64_t)((saddr & 0x3FFFF) >> 4) | ((uint64_t)(1024 >> 4) << 16) | ((uint64_t)(1024 >> 4) << 32) |
           ((uint64_t)1 << 62);
}

__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/* shared-memory writes of this thread (st.shared, cp.async) made visible to
 * the async proxy wgmma reads through; then a barrier for the other threads */
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void reg_fence(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}

#define DS_WG_D8(d, i)                                                                                                \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]),         \
        "+f"(d[i + 7])

/* d = A . B (+ d when acc), m64n16k16: A 64x16 and B (16 rows of N = 16) both K-major sw128 in shared memory */
template <bool BF> __device__ __forceinline__ void wg_m64n16k16_ss(float (&d)[8], uint64_t a, uint64_t b, int acc) {
    if constexpr (BF)
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7}, %8, %9, p, 1, 1, "
                     "0, 0;\n}\n"
                     : DS_WG_D8(d, 0)
                     : "l"(a), "l"(b), "r"(acc));
    else
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n16k16.f32.f16.f16 {%0,%1,%2,%3,%4,%5,%6,%7}, %8, %9, p, 1, 1, "
                     "0, 0;\n}\n"
                     : DS_WG_D8(d, 0)
                     : "l"(a), "l"(b), "r"(acc));
}

/* the same with N = 32 (B: 32 rows) */
template <bool BF> __device__ __forceinline__ void wg_m64n32k16_ss(float (&d)[16], uint64_t a, uint64_t b, int acc) {
    if constexpr (BF)
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,"
                     "%13,%14,%15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
                     : DS_WG_D8(d, 0), DS_WG_D8(d, 8)
                     : "l"(a), "l"(b), "r"(acc));
    else
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,"
                     "%13,%14,%15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
                     : DS_WG_D8(d, 0), DS_WG_D8(d, 8)
                     : "l"(a), "l"(b), "r"(acc));
}

/* d += A . B, m64n64k16: A from registers (this warp's m16k16 fragment),
 * B 16 (k) x 64 (n) MN-major sw128 in shared memory (one atom: the 16 k
 * rows of 128 bytes, transposed by the unit: imm-trans-b 1) */
template <bool BF>
__device__ __forceinline__ void wg_m64n64k16_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t b) {
    if constexpr (BF)
        asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
                     "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,"
                     "%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, 1, 1, 1, 1;\n"
                     : DS_WG_D8(d, 0), DS_WG_D8(d, 8), DS_WG_D8(d, 16), DS_WG_D8(d, 24)
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
    else
        asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
                     "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,"
                     "%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, 1, 1, 1, 1;\n"
                     : DS_WG_D8(d, 0), DS_WG_D8(d, 8), DS_WG_D8(d, 16), DS_WG_D8(d, 24)
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}
#undef DS_WG_D8

} // namespace
#endif
