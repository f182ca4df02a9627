/* y = x Wᵀ + b for a few rows x: the matrix-vector products of a decode step, streaming W once.
 *
 * gpt/matvec.py compiles this file on first use (cc -O3 -march=native -fopenmp) and calls it through ctypes.
 * x (rows, k) and y (rows, n) are fp32, row-major; W (n, k) is row-major (nn.Linear's own layout), fp32 or bf16;
 * b (n,) fp32 or NULL. Each thread takes a contiguous band of W's rows and streams it front to back, the access a
 * memory system serves fastest: with one row of x, row after row; with more, a block of 4 weight rows shares each
 * load of x, and 2 rows of x share each load of W. Sums are fp32, in another order than MKL's (they differ by a
 * few ulps). The loops are plain C: `omp simd` lets the compiler vectorise them for the CPU it builds on (AVX2,
 * AVX-512, NEON, ...).
 *
 * Two switches, which gpt/matvec.py sets on Intel CPUs with AVX-512 (measured on a 2-core Xeon with AMX, whose
 * prefetchers and shuffle ports differ from AMD's; AMD keeps the loops it was measured with):
 * ROWS_SIDE_BY_SIDE: at one row of x, fp32 weights are read 4 rows side by side (4 streams) instead of one row after
 * the other; BF16_PAIRS: at one row of x, bf16 weights are widened two at a time from each 32-bit word (a shift and
 * a mask, no shuffles), against x split into its even and odd elements, and the weights 2 rows ahead are prefetched
 * into L2 (PREFETCH_ROWS). Both give the same products, summed in another order.
 */
#include <stdint.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))
#define WIDEN_MAX 8192 /* the longest rows (k) block() widens to fp32 on its stack: 128 KB */ /* bf16 is a constant: one copy of each loop per dtype */

#ifndef PREFETCH_ROWS
#define PREFETCH_ROWS 2
#endif

INLINE float bits(uint32_t u) { /* the fp32 number with these bits */
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

INLINE float weight(const void *w, long i, const int bf16) { /* w[i] as fp32 */
    if (!bf16) return ((const float *)w)[i];
    return bits((uint32_t)((const uint16_t *)w)[i] << 16); /* a bf16 number is the top half of an fp32 one */
}

INLINE float dot(const float *restrict x, const void *w, long k, const int bf16) { /* x · the row at w */
    float a = 0;
#pragma omp simd reduction(+ : a)
    for (long i = 0; i < k; i++) a += x[i] * weight(w, i, bf16);
    return a;
}

INLINE float dot_pairs(const float *restrict xe, const float *restrict xo, const uint32_t *u, long k) {
    /* x · a bf16 row of even length k, read as k/2 words: element 2i is word i's low half, 2i+1 its high half;
     * xe = x's even elements, xo = its odd ones */
    float a = 0, c = 0;
#pragma omp simd reduction(+ : a, c)
    for (long i = 0; i < k / 2; i++) a += xe[i] * bits(u[i] << 16), c += xo[i] * bits(u[i] & 0xFFFF0000u);
    return a + c;
}

INLINE void rows4_x1(const float *restrict x, const void *w, long k, float *restrict out, const int bf16,
                     const float *xp) {
    /* out[t] = x · W[t] for t < 4, W[t] = the row starting at element t·k of w: one row after the other, so a
     * thread reads its band of W front to back in one stream. 4 rows side by side (4 streams a row apart) read
     * slower on a 2-core AMD EPYC Zen 5: 84% of a plain sum's rate in fp32 against 94%, bf16 ≈ 25% slower; on a
     * 2-core Intel Xeon with AMX fp32 read 16% faster side by side (ROWS_SIDE_BY_SIDE). xp: x split into even and
     * odd elements (BF16_PAIRS), or NULL */
    const long size = bf16 ? 2 : 4;
#if BF16_PAIRS
    if (bf16 && xp) {
        for (int t = 0; t < 4; t++) {
            const char *ahead = (const char *)w + (t + PREFETCH_ROWS) * k * size;
            for (long o = 0; o < k * size; o += 64) __builtin_prefetch(ahead + o, 0, 2); /* into L2 */
            out[t] = dot_pairs(xp, xp + k / 2, (const uint32_t *)((const char *)w + t * k * size), k);
        }
        return;
    }
#endif
#if ROWS_SIDE_BY_SIDE
    if (!bf16) {
        float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        const float *w0 = w;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
        for (long i = 0; i < k; i++)
            a0 += x[i] * w0[i], a1 += x[i] * w0[k + i], a2 += x[i] * w0[2 * k + i], a3 += x[i] * w0[3 * k + i];
        out[0] = a0, out[1] = a1, out[2] = a2, out[3] = a3;
        return;
    }
#endif
    (void)xp;
    for (int t = 0; t < 4; t++) out[t] = dot(x, (const char *)w + t * k * size, k, bf16);
}

INLINE void rows4_x2(const float *restrict x, const void *w, long k, float *restrict out, const int bf16) {
    /* out[r·4 + t] = x[r] · W[t] for two rows r of x: each weight loaded once for both */
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0, c0 = 0, c1 = 0, c2 = 0, c3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3, c0, c1, c2, c3)
    for (long i = 0; i < k; i++) {
        float v0 = weight(w, i, bf16), v1 = weight(w, k + i, bf16);
        float v2 = weight(w, 2 * k + i, bf16), v3 = weight(w, 3 * k + i, bf16);
        a0 += x[i] * v0, a1 += x[i] * v1, a2 += x[i] * v2, a3 += x[i] * v3;
        c0 += x[k + i] * v0, c1 += x[k + i] * v1, c2 += x[k + i] * v2, c3 += x[k + i] * v3;
    }
    out[0] = a0, out[1] = a1, out[2] = a2, out[3] = a3, out[4] = c0, out[5] = c1, out[6] = c2, out[7] = c3;
}

INLINE void pairs(const float *x, const void *wj, const float *bj, float *yj, long rows, long n, long k,
                  const int bf16, const float *xp) {
    /* yj[r, 0..4) = x[r] · the 4 rows at wj (+ bj), for every row r of x, two at a time */
    for (long r = 0; r < rows; r += 2) {
        float o[8];
        const int two = r + 1 < rows;
        if (two) rows4_x2(x + r * k, wj, k, o, bf16);
        else rows4_x1(x + r * k, wj, k, o, bf16, xp);
        for (int q = 0; q <= two; q++)
            for (int t = 0; t < 4; t++) yj[(r + q) * n + t] = o[4 * q + t] + (bj ? bj[t] : 0.f);
    }
}

INLINE void block(const float *x, const void *w, const float *b, float *y, long rows, long n, long k, long j,
                  const int bf16, const float *xp) {
    /* y[:, j..j+4) */
    const void *wj = (const char *)w + j * k * (bf16 ? 2 : 4);
    const float *bj = b ? b + j : 0;
    if (bf16 && rows > 2 && k <= WIDEN_MAX) { /* widen the 4 bf16 rows once, not once per pair of rows of x */
        float wide[4 * k]; /* 48 KB at k = 3072, on the thread's stack: in cache */
        for (long i = 0; i < 4 * k; i++) wide[i] = weight(wj, i, 1);
        pairs(x, wide, bj, y + j, rows, n, k, 0, 0);
    } else {
        pairs(x, wj, bj, y + j, rows, n, k, bf16, xp);
    }
}

INLINE void tail(const float *x, const void *w, const float *b, float *y, long rows, long n, long k, const int bf16) {
    /* the last n % 4 rows of W */
    for (long j = n - n % 4; j < n; j++)
        for (long r = 0; r < rows; r++)
            y[r * n + j] = dot(x + r * k, (const char *)w + j * k * (bf16 ? 2 : 4), k, bf16) + (b ? b[j] : 0.f);
}

/* The exported functions. Each thread takes a contiguous band of blocks (schedule(static)). The dtype is a literal
 * inside the parallel loop: OpenMP outlines the loop body into a function of its own before inlining, and a
 * dtype passed in from outside would reach the inner loops as a variable (measured: 2× slower). */
void matvec_f32(const float *x, const float *w, const float *b, float *y, long rows, long n, long k, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long j = 0; j < n - n % 4; j += 4) block(x, w, b, y, rows, n, k, j, 0, 0);
    tail(x, w, b, y, rows, n, k, 0);
}

void matvec_bf16(const float *x, const uint16_t *w, const float *b, float *y, long rows, long n, long k,
                 int threads) {
    const float *xp = 0; /* x split into even and odd elements, for dot_pairs */
#if BF16_PAIRS
    float split[rows == 1 && k % 2 == 0 && k <= WIDEN_MAX ? k : 1]; /* ≤ 32 KB, on this thread's stack */
    if (rows == 1 && k % 2 == 0 && k <= WIDEN_MAX) {
        for (long i = 0; i < k / 2; i++) split[i] = x[2 * i], split[k / 2 + i] = x[2 * i + 1];
        xp = split;
    }
#endif
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long j = 0; j < n - n % 4; j += 4) block(x, w, b, y, rows, n, k, j, 1, xp);
    tail(x, w, b, y, rows, n, k, 1);
}
