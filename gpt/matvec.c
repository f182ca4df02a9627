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
 *
 * blocks_f32 / blocks_bf16 (the end of this file): the transformer blocks of a batch-1 decode step in one parallel
 * region — per block LayerNorm, the Q/K/V mat-vec, the cache write, attention, the output projection, LayerNorm, the
 * MLP with GELU's tanh form, both residual adds — so that a step is one call instead of ≈ 180 torch ops
 * (gpt/matvec.py).
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

INLINE void mv(const float *x, const void *w, const float *b, float *y, long rows, long n, long k, const int bf16,
               const float *xp) {
    /* y = x Wᵀ + b, inside a parallel region: each thread takes a contiguous band of blocks (schedule(static)) */
#pragma omp for schedule(static)
    for (long j = 0; j < n - n % 4; j += 4) block(x, w, b, y, rows, n, k, j, bf16, xp);
#pragma omp single
    tail(x, w, b, y, rows, n, k, bf16);
}

INLINE const float *split_pairs(const float *x, long k, float *split) {
    /* x split into its even and odd elements, for dot_pairs (BF16_PAIRS, one row of x, even k ≤ WIDEN_MAX), else
     * NULL */
#if BF16_PAIRS
    if (k % 2 == 0 && k <= WIDEN_MAX) {
        for (long i = 0; i < k / 2; i++) split[i] = x[2 * i], split[k / 2 + i] = x[2 * i + 1];
        return split;
    }
#endif
    (void)x, (void)k, (void)split;
    return 0;
}

/* The exported functions. The dtype is a literal inside the parallel region: OpenMP outlines the region's body into
 * a function of its own before inlining, and a dtype passed in from outside would reach the inner loops as a
 * variable (measured: 2× slower). */
void matvec_f32(const float *x, const float *w, const float *b, float *y, long rows, long n, long k, int threads) {
#pragma omp parallel num_threads(threads)
    mv(x, w, b, y, rows, n, k, 0, 0);
}

void matvec_bf16(const float *x, const uint16_t *w, const float *b, float *y, long rows, long n, long k,
                 int threads) {
    float split[rows == 1 && k <= WIDEN_MAX ? k : 1]; /* ≤ 32 KB, on this thread's stack */
    const float *xp = rows == 1 ? split_pairs(x, k, split) : 0;
#pragma omp parallel num_threads(threads)
    mv(x, w, b, y, rows, n, k, 1, xp);
}

/* ---- One transformer block of a decode step at batch 1, in one parallel region (decode_block below). ---- */

INLINE uint16_t to_bf16(float f) { /* f rounded to the nearest bf16, ties to even (as torch's .to(bfloat16)) */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1)) >> 16);
}

INLINE float rnd(float f, const int bf16) { /* what storing f in the model's dtype keeps of it */
    return bf16 ? bits((uint32_t)to_bf16(f) << 16) : f;
}

INLINE float exp_approx(float x) {
    /* e^x for |x| ≤ 87 (clamped there), in plain arithmetic the compiler vectorises: x = n·ln 2 + r, |r| ≤ ln 2 / 2,
     * ln 2 split in two parts (Cody & Waite) so that r is nearly exact, e^r by its Taylor series to r⁷ (the next
     * term, r⁸/8! < 6e-9, is below fp32's half ulp, 6e-8), times 2ⁿ built in the exponent bits: at most 1.18 ulp
     * from e^x over 2M points of [-87, 87] (these operations in numpy float32, without FMA), and a block's output as
     * close to exact as torch's fp32 forward (tests/test_matvec.py) */
    x = x < -87.f ? -87.f : (x > 87.f ? 87.f : x);
    float n = __builtin_rintf(x * 1.44269504088896341f);
    float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
    float p = 1.f + r * (1.f + r * (1.f / 2 + r * (1.f / 6 + r * (1.f / 24 + r * (1.f / 120 + r * (1.f / 720
              + r * (1.f / 5040)))))));
    return p * bits((uint32_t)((int)n + 127) << 23);
}

INLINE void layer_norm(const float *x, const void *w, const void *b, float eps, float *out, long c, const int bf16) {
    /* out = (x - mean) / sqrt(var + eps) · w + b over c elements (var biased, as nn.LayerNorm), rounded to the dtype */
    float s = 0, ss = 0;
#pragma omp simd reduction(+ : s)
    for (long i = 0; i < c; i++) s += x[i];
    const float mean = s / c;
#pragma omp simd reduction(+ : ss)
    for (long i = 0; i < c; i++) ss += (x[i] - mean) * (x[i] - mean);
    const float rstd = 1.f / __builtin_sqrtf(ss / c + eps);
    for (long i = 0; i < c; i++) out[i] = rnd((x[i] - mean) * rstd * weight(w, i, bf16) + weight(b, i, bf16), bf16);
}

INLINE void residual_add(float *x, const float *t, long c, const int bf16) { /* x += t, each rounded to the dtype */
    for (long i = 0; i < c; i++) x[i] = rnd(x[i] + rnd(t[i], bf16), bf16);
}

INLINE void attention(const float *q, void *kc, void *vc, const unsigned char *mask, long s_len, long d, float *p,
                      float *y, const int bf16) {
    /* one head, one query: y = softmax(q·Kᵀ / √d over the slots s < s_len where mask[s] (all: mask NULL)) · V, K and V
     * this head's (max_len, d) cache rows; p: s_len floats of scratch */
    const float scale = 1.f / __builtin_sqrtf((float)d);
    float top = -__builtin_inff(), sum = 0;
    for (long s = 0; s < s_len; s++) {
        float a = 0;
        const char *ks = (const char *)kc + s * d * (bf16 ? 2 : 4);
#pragma omp simd reduction(+ : a)
        for (long i = 0; i < d; i++) a += q[i] * weight(ks, i, bf16);
        p[s] = mask && !mask[s] ? -__builtin_inff() : a * scale;
        top = p[s] > top ? p[s] : top;
    }
    for (long i = 0; i < d; i++) y[i] = 0;
    for (long s = 0; s < s_len; s++) {
        if (mask && !mask[s]) continue;
        const float e = exp_approx(p[s] - top);
        const char *vs = (const char *)vc + s * d * (bf16 ? 2 : 4);
        sum += e;
#pragma omp simd
        for (long i = 0; i < d; i++) y[i] += e * weight(vs, i, bf16);
    }
    for (long i = 0; i < d; i++) y[i] = rnd(y[i] / sum, bf16);
}

INLINE const float *widened(const void *b, long n, float *out, const int bf16, const int write) {
    /* a bias as fp32, as mv adds it: b itself in fp32 (or NULL), else out, where b's n bf16 values are widened when
     * write (by one thread; the others only take the pointer) */
    if (!bf16 || !b) return b;
    for (long i = 0; write && i < n; i++) out[i] = weight(b, i, 1);
    return out;
}

enum { LN1_W, LN1_B, ATTN_W, ATTN_B, ATTN_PROJ_W, ATTN_PROJ_B, LN2_W, LN2_B, FC_W, FC_B, MLP_PROJ_W, MLP_PROJ_B, NP };

INLINE void decode_block(float *x, void *const *p, void *kc, void *vc, const unsigned char *mask, long c, long h,
                         long max_len, long pos, long s_len, float eps1, float eps2, float *buf, const float **xp,
                         const int bf16) {
    /* Inside a parallel region: x (c) += attn(ln_1(x)), then x += mlp(ln_2(x)) — Block.forward for one token at
     * batch 1, its k and v written into the cache (1, h, max_len, c / h) at slot pos, attending to slots < s_len.
     * Rounded to the dtype where the model's bf16 forward rounds (each Linear's, attention's, GELU's output and
     * each sum). buf: 18c + h·s_len floats of scratch; xp: shared by the threads (declared outside the region),
     * the input of the next bf16 mat-vec split for dot_pairs. */
    const long d = c / h, size = bf16 ? 2 : 4;
    float *a = buf, *qkv = a + c, *y = qkv + 3 * c, *t = y + c, *f = t + c, *split = f + 4 * c, *wide = split + 4 * c,
          *prob = wide + 4 * c;
#pragma omp single
    {
        layer_norm(x, p[LN1_W], p[LN1_B], eps1, a, c, bf16);
        if (bf16) *xp = split_pairs(a, c, split);
        widened(p[ATTN_B], 3 * c, wide, bf16, 1);
    } /* each single ends in a barrier */
    mv(a, p[ATTN_W], widened(p[ATTN_B], 3 * c, wide, bf16, 0), qkv, 1, 3 * c, c, bf16, *xp);
#pragma omp for schedule(static)
    for (long i = 0; i < h; i++) { /* this head's q, its k and v into the cache, then its attention */
        for (long j = 0; j < 3 * d; j++) qkv[(j / d) * c + i * d + j % d] = rnd(qkv[(j / d) * c + i * d + j % d], bf16);
        char *ki = (char *)kc + i * max_len * d * size, *vi = (char *)vc + i * max_len * d * size;
        for (long j = 0; j < d; j++) {
            if (bf16) {
                ((uint16_t *)ki)[pos * d + j] = to_bf16(qkv[c + i * d + j]);
                ((uint16_t *)vi)[pos * d + j] = to_bf16(qkv[2 * c + i * d + j]);
            } else {
                ((float *)ki)[pos * d + j] = qkv[c + i * d + j];
                ((float *)vi)[pos * d + j] = qkv[2 * c + i * d + j];
            }
        }
        attention(qkv + i * d, ki, vi, mask, s_len, d, prob + i * s_len, y + i * d, bf16);
    }
#pragma omp single
    {
        if (bf16) *xp = split_pairs(y, c, split);
        widened(p[ATTN_PROJ_B], c, wide, bf16, 1);
    }
    mv(y, p[ATTN_PROJ_W], widened(p[ATTN_PROJ_B], c, wide, bf16, 0), t, 1, c, c, bf16, *xp);
#pragma omp single
    {
        residual_add(x, t, c, bf16);
        layer_norm(x, p[LN2_W], p[LN2_B], eps2, a, c, bf16);
        if (bf16) *xp = split_pairs(a, c, split);
        widened(p[FC_B], 4 * c, wide, bf16, 1);
    }
    mv(a, p[FC_W], widened(p[FC_B], 4 * c, wide, bf16, 0), f, 1, 4 * c, c, bf16, *xp);
#pragma omp for schedule(static)
    for (long i = 0; i < 4 * c; i++) { /* GELU, tanh form: 0.5 v (1 + tanh(u)) = v / (1 + e^(-2u)) */
        const float v = rnd(f[i], bf16), u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
        f[i] = rnd(v / (1.f + exp_approx(-2.f * u)), bf16);
    }
#pragma omp single
    {
        if (bf16) *xp = split_pairs(f, 4 * c, split);
        widened(p[MLP_PROJ_B], c, wide, bf16, 1);
    }
    mv(f, p[MLP_PROJ_W], widened(p[MLP_PROJ_B], c, wide, bf16, 0), t, 1, c, 4 * c, bf16, *xp);
#pragma omp single
    residual_add(x, t, c, bf16);
}

/* The exported block functions: n_layer blocks of a decode step in one parallel region (one fork and join a step,
 * no Python between blocks: 0.3-0.6 ms of a 124M step on a 2-core Intel Xeon), p holding NP pointers per layer,
 * kc / vc one cache buffer per layer, eps two per layer (ln_1's, ln_2's). */
void blocks_f32(float *x, void *const *p, void *const *kc, void *const *vc, const unsigned char *mask, long n_layer,
                long c, long h, long max_len, long pos, long s_len, const float *eps, float *buf, int threads) {
    const float *xp = 0;
#pragma omp parallel num_threads(threads)
    for (long l = 0; l < n_layer; l++)
        decode_block(x, p + l * NP, kc[l], vc[l], mask, c, h, max_len, pos, s_len, eps[2 * l], eps[2 * l + 1], buf,
                     &xp, 0);
}

void blocks_bf16(float *x, void *const *p, void *const *kc, void *const *vc, const unsigned char *mask, long n_layer,
                 long c, long h, long max_len, long pos, long s_len, const float *eps, float *buf, int threads) {
    const float *xp = 0;
#pragma omp parallel num_threads(threads)
    for (long l = 0; l < n_layer; l++)
        decode_block(x, p + l * NP, kc[l], vc[l], mask, c, h, max_len, pos, s_len, eps[2 * l], eps[2 * l + 1], buf,
                     &xp, 1);
}
