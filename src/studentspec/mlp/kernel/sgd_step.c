/* One plain-SGD step of an ensemble of MLPs, float64 or float32, one seed after another (AVX2 + FMA).
 *
 * Why: the batched-BLAS step multiplies many 16 x 100 x 100 matrices and reaches about a third
 * of the GEMM peak; here each seed's forward, backward and update run back to back while its
 * weights are in cache, and the small products go through register-tiled kernels.
 * Layouts (row-major, seed axis first): x [S, B, w0], y [S, B, wL], W_l [S, w_l, w_{l+1}],
 * b_l [S, w_{l+1}]; layer l computes h_{l+1} = psi(h_l W_l + b_l), the top layer is linear.
 * Every seed is computed by the same instructions whatever S is, so a seed gives the same bits
 * alone and inside an ensemble. Exported: ss_workspace, ss_sgd_step_{f64,f32}, ss_sgd_steps_{f64,f32},
 * ss_forward_grad_{f64,f32}, ss_corr_update_{f64,f32} (sgd_step_impl.h, included once per precision), declared
 * with their structs and enums in sgd_step.h: included here, so the compiler checks every definition against the
 * declarations the Python binding hands to cffi.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <omp.h>
#include <string.h>

#include "sgd_step.h"

#define SFX3(name, sfx) name##_##sfx
#define SFX2(name, sfx) SFX3(name, sfx)
#define SFX(name) SFX2(name, SUFFIX)

#define FMA(c, a, b) c = V_FMA(a, b, c)

/* Register tiles: C[0:rows, 0:cols] (=|+=) alpha * A[0:rows, 0:K] @ B[0:K, 0:cols], where
 * A[i, k] = A[i*sam + k*sak] (any strides, read one scalar at a time) and B is row-major.
 * Named accumulators (not arrays) so the compiler keeps them in registers. Rows past `rows`
 * repeat row 0 and are not stored; columns past `cols` are masked (the _m variants). */
#define TILE_4x12(NAME, LOAD)                                                                                 \
    static void NAME(int K, const REAL *A, long sam, long sak, int rows, const REAL *B, long ldb,         \
                     REAL *C, long ldc, int cols, double alpha, int acc_into, const MASKV *mk) {          \
        VEC c00 = V_ZERO(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;           \
        VEC c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;                           \
        const REAL *a0 = A, *a1 = rows > 1 ? A + sam : A, *a2 = rows > 2 ? A + 2 * sam : A;               \
        const REAL *a3 = rows > 3 ? A + 3 * sam : A;                                                       \
        (void)mk;                                                                                            \
        for (int k = 0; k < K; k++, B += ldb, a0 += sak, a1 += sak, a2 += sak, a3 += sak) {                  \
            VEC b0 = LOAD(B, 0), b1 = LOAD(B + VL, 1), b2 = LOAD(B + 2 * VL, 2), x;                          \
            x = V_BCAST(a0); FMA(c00, x, b0); FMA(c01, x, b1); FMA(c02, x, b2);                \
            x = V_BCAST(a1); FMA(c10, x, b0); FMA(c11, x, b1); FMA(c12, x, b2);                \
            x = V_BCAST(a2); FMA(c20, x, b0); FMA(c21, x, b1); FMA(c22, x, b2);                \
            x = V_BCAST(a3); FMA(c30, x, b0); FMA(c31, x, b1); FMA(c32, x, b2);                \
        }                                                                                                    \
        VEC r[4][3] = {{c00, c01, c02}, {c10, c11, c12}, {c20, c21, c22}, {c30, c31, c32}};             \
        SFX(store_rows)(&r[0][0], 3, rows, C, ldc, cols, alpha, acc_into);                                        \
    }
#define TILE_6x8(NAME, LOAD)                                                                                  \
    static void NAME(int K, const REAL *A, long sam, long sak, int rows, const REAL *B, long ldb,         \
                     REAL *C, long ldc, int cols, double alpha, int acc_into, const MASKV *mk) {          \
        VEC c00 = V_ZERO(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;           \
        VEC c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;                           \
        const REAL *a0 = A, *a1 = rows > 1 ? A + sam : A, *a2 = rows > 2 ? A + 2 * sam : A;               \
        const REAL *a3 = rows > 3 ? A + 3 * sam : A, *a4 = rows > 4 ? A + 4 * sam : A;                    \
        const REAL *a5 = rows > 5 ? A + 5 * sam : A;                                                       \
        (void)mk;                                                                                            \
        for (int k = 0; k < K; k++, B += ldb, a0 += sak, a1 += sak, a2 += sak, a3 += sak, a4 += sak,        \
                 a5 += sak) {                                                                                \
            VEC b0 = LOAD(B, 0), b1 = LOAD(B + VL, 1), x;                                                \
            x = V_BCAST(a0); FMA(c00, x, b0); FMA(c01, x, b1);                                 \
            x = V_BCAST(a1); FMA(c10, x, b0); FMA(c11, x, b1);                                 \
            x = V_BCAST(a2); FMA(c20, x, b0); FMA(c21, x, b1);                                 \
            x = V_BCAST(a3); FMA(c30, x, b0); FMA(c31, x, b1);                                 \
            x = V_BCAST(a4); FMA(c40, x, b0); FMA(c41, x, b1);                                 \
            x = V_BCAST(a5); FMA(c50, x, b0); FMA(c51, x, b1);                                 \
        }                                                                                                    \
        VEC r[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};         \
        SFX(store_rows)(&r[0][0], 2, rows, C, ldc, cols, alpha, acc_into);                                        \
    }

/* The 8-row tiles' pointers to rows 0..7 of A (rows past `rows` repeat row 0) and their step to the next k */
#define ROWS8                                                                                                \
    const REAL *a0 = A, *a1 = rows > 1 ? A + sam : A, *a2 = rows > 2 ? A + 2 * sam : A;                   \
    const REAL *a3 = rows > 3 ? A + 3 * sam : A, *a4 = rows > 4 ? A + 4 * sam : A;                        \
    const REAL *a5 = rows > 5 ? A + 5 * sam : A, *a6 = rows > 6 ? A + 6 * sam : A;                        \
    const REAL *a7 = rows > 7 ? A + 7 * sam : A
#define NEXT_K8 k++, B += ldb, a0 += sak, a1 += sak, a2 += sak, a3 += sak, a4 += sak, a5 += sak, a6 += sak, a7 += sak
#define TILE_8x12(NAME, LOAD)                                                                                 \
    static void NAME(int K, const REAL *A, long sam, long sak, int rows, const REAL *B, long ldb,         \
                     REAL *C, long ldc, int cols, double alpha, int acc_into, const MASKV *mk) {          \
        VEC c00 = V_ZERO(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00, c20 = c00, c21 = c00;     \
        VEC c22 = c00, c30 = c00, c31 = c00, c32 = c00, c40 = c00, c41 = c00, c42 = c00, c50 = c00;         \
        VEC c51 = c00, c52 = c00, c60 = c00, c61 = c00, c62 = c00, c70 = c00, c71 = c00, c72 = c00;         \
        ROWS8;                                                                                               \
        (void)mk;                                                                                            \
        for (int k = 0; k < K; NEXT_K8) {                                                                    \
            VEC b0 = LOAD(B, 0), b1 = LOAD(B + VL, 1), b2 = LOAD(B + 2 * VL, 2), x;                          \
            x = V_BCAST(a0); FMA(c00, x, b0); FMA(c01, x, b1); FMA(c02, x, b2);                              \
            x = V_BCAST(a1); FMA(c10, x, b0); FMA(c11, x, b1); FMA(c12, x, b2);                              \
            x = V_BCAST(a2); FMA(c20, x, b0); FMA(c21, x, b1); FMA(c22, x, b2);                              \
            x = V_BCAST(a3); FMA(c30, x, b0); FMA(c31, x, b1); FMA(c32, x, b2);                              \
            x = V_BCAST(a4); FMA(c40, x, b0); FMA(c41, x, b1); FMA(c42, x, b2);                              \
            x = V_BCAST(a5); FMA(c50, x, b0); FMA(c51, x, b1); FMA(c52, x, b2);                              \
            x = V_BCAST(a6); FMA(c60, x, b0); FMA(c61, x, b1); FMA(c62, x, b2);                              \
            x = V_BCAST(a7); FMA(c70, x, b0); FMA(c71, x, b1); FMA(c72, x, b2);                              \
        }                                                                                                    \
        if (rows == 8 && cols == 3 * VL) { /* a full tile: stored from the registers, as store_rows would */     \
            VEC al = V_SET1(alpha);                                                                          \
            STORE3(C, c00, c01, c02); STORE3(C + ldc, c10, c11, c12); STORE3(C + 2 * ldc, c20, c21, c22);   \
            STORE3(C + 3 * ldc, c30, c31, c32); STORE3(C + 4 * ldc, c40, c41, c42);                          \
            STORE3(C + 5 * ldc, c50, c51, c52); STORE3(C + 6 * ldc, c60, c61, c62);                          \
            STORE3(C + 7 * ldc, c70, c71, c72);                                                              \
            return;                                                                                          \
        }                                                                                                    \
        VEC r[8][3] = {{c00, c01, c02}, {c10, c11, c12}, {c20, c21, c22}, {c30, c31, c32},                   \
                       {c40, c41, c42}, {c50, c51, c52}, {c60, c61, c62}, {c70, c71, c72}};                  \
        SFX(store_rows)(&r[0][0], 3, rows, C, ldc, cols, alpha, acc_into);                                   \
    }
/* C[0:3VL] (=|+=) alpha * (c0, c1, c2), the arithmetic of store_rows */
#define STORE1(p, c) V_STORE(p, acc_into ? V_ADD(V_LOAD(p), V_MUL(al, c)) : V_MUL(al, c))
#define STORE3(p, c0, c1, c2) STORE1(p, c0); STORE1((p) + VL, c1); STORE1((p) + 2 * VL, c2)
#define TILE_8x1(NAME, LOAD)                                                                                  \
    static void NAME(int K, const REAL *A, long sam, long sak, int rows, const REAL *B, long ldb,         \
                     REAL *C, long ldc, int cols, double alpha, int acc_into, const MASKV *mk) {          \
        VEC c0 = V_ZERO(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;                   \
        ROWS8;                                                                                               \
        (void)mk;                                                                                            \
        for (int k = 0; k < K; NEXT_K8) {                                                                    \
            VEC b0 = LOAD(B, 0);                                                                             \
            FMA(c0, V_BCAST(a0), b0); FMA(c1, V_BCAST(a1), b0); FMA(c2, V_BCAST(a2), b0);                    \
            FMA(c3, V_BCAST(a3), b0); FMA(c4, V_BCAST(a4), b0); FMA(c5, V_BCAST(a5), b0);                    \
            FMA(c6, V_BCAST(a6), b0); FMA(c7, V_BCAST(a7), b0);                                              \
        }                                                                                                    \
        VEC r[8] = {c0, c1, c2, c3, c4, c5, c6, c7};                                                         \
        SFX(store_rows)(r, 1, rows, C, ldc, cols, alpha, acc_into);                                          \
    }

/* Cache lines of the next batch's rows, prefetched a few at a time between register tiles: the rows are scattered over
 * a training set far bigger than the caches, and a burst of hundreds of prefetches stalled on the line fill buffers
 * (the gather then cost a fifth of a step); spread over a step they arrive in time. */
#define PF_LINES 1024
typedef struct {
    const char *line[PF_LINES];
    int n, i; /* lines queued, lines prefetched */
} Prefetch;

static void pf_add(Prefetch *p, const void *start, long bytes) { /* every line of [start, start + bytes), while room */
    uintptr_t a = (uintptr_t)start & ~(uintptr_t)63, end = (uintptr_t)start + (uintptr_t)bytes;
    for (; a < end && p->n < PF_LINES; a += 64) p->line[p->n++] = (const char *)a;
}

static void pf_some(Prefetch *p, int k) { /* the next k queued lines (none without a queue) */
    if (p)
        for (; k > 0 && p->i < p->n; k--) _mm_prefetch(p->line[p->i++], _MM_HINT_T1);
}

#define PLAIN(p, v) V_LOAD(p)
#define MASKED(p, v) V_MASKLOAD(p, mk[v])

/* Where one thread's workspace (elements of the run's precision) puts each buffer of a pass over one seed: h[l]
 * ([B, widths[l]], l = 1..L: layer l's output, h[L] then dLoss/dout), five [B, widest] scratch buffers and the
 * gathered batch xb [B, widths[0]], yb [B, widths[L]]; `end` is the whole (ss_workspace). Both the size and the
 * carving (seed_pass) come from here, so they cannot drift apart. */
typedef struct {
    long h[SS_MAX_LAYERS + 1];
    long gT, belowT, ga, gb, wT, xb, yb, end;
    int widest;
} Layout;

static Layout layout(int L, const int *widths, int B) {
    Layout o = {.widest = 0};
    long at = 0;
    for (int l = 1; l <= L; l++) {
        o.h[l] = at;
        at += (long)B * widths[l];
    }
    for (int l = 0; l <= L; l++) o.widest = widths[l] > o.widest ? widths[l] : o.widest;
    long scratch = (long)B * o.widest;
    o.gT = at;
    o.belowT = o.gT + scratch;
    o.ga = o.belowT + scratch;
    o.gb = o.ga + scratch;
    o.wT = o.gb + scratch;
    o.xb = o.wT + scratch;
    o.yb = o.xb + (long)B * widths[0];
    o.end = o.yb + (long)B * widths[L];
    return o;
}

long ss_workspace(int L, const int *widths, int B) { return layout(L, widths, B).end; }

#ifdef __AVX512F__
/* 512-bit vectors (built with -mavx512f where the CPU has it: kernel/__init__.py). Every output element is
 * still one lane accumulating over k in order, with the same FMAs, and every other sum is scalar: a seed's
 * numbers are the same bits as the 256-bit build's. */
#define REAL double
#define VEC __m512d
#define MASKV __mmask8
#define VL 8
#define SUFFIX f64
#define V_FMA _mm512_fmadd_pd
#define V_ZERO _mm512_setzero_pd
#define V_LOAD _mm512_loadu_pd
#define V_STORE _mm512_storeu_pd
#define V_BCAST(p) _mm512_set1_pd(*(p))
#define V_MUL _mm512_mul_pd
#define V_ADD _mm512_add_pd
#define V_SET1 _mm512_set1_pd
#define V_MASKLOAD(p, m) _mm512_maskz_loadu_pd(m, p)
#define V_MASKSTORE(p, m, v) _mm512_mask_storeu_pd(p, m, v)
#define LANE_MASK(n) ((__mmask8)((1u << (n)) - 1u))
#include "sgd_step_impl.h"
#include "sgd_step_undef.h"

#define REAL float
#define VEC __m512
#define MASKV __mmask16
#define VL 16
#define SUFFIX f32
#define V_FMA _mm512_fmadd_ps
#define V_ZERO _mm512_setzero_ps
#define V_LOAD _mm512_loadu_ps
#define V_STORE _mm512_storeu_ps
#define V_BCAST(p) _mm512_set1_ps(*(p))
#define V_MUL _mm512_mul_ps
#define V_ADD _mm512_add_ps
#define V_SET1(a) _mm512_set1_ps((float)(a))
#define V_MASKLOAD(p, m) _mm512_maskz_loadu_ps(m, p)
#define V_MASKSTORE(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#define LANE_MASK(n) ((__mmask16)((1u << (n)) - 1u))
#include "sgd_step_impl.h"

#else
#define REAL double
#define VEC __m256d
#define MASKV __m256i
#define VL 4
#define SUFFIX f64
#define V_FMA _mm256_fmadd_pd
#define V_ZERO _mm256_setzero_pd
#define V_LOAD _mm256_loadu_pd
#define V_STORE _mm256_storeu_pd
#define V_BCAST _mm256_broadcast_sd
#define V_MUL _mm256_mul_pd
#define V_ADD _mm256_add_pd
#define V_SET1 _mm256_set1_pd
#define V_MASKLOAD _mm256_maskload_pd
#define V_MASKSTORE _mm256_maskstore_pd
#define LANE_MASK(n) _mm256_set_epi64x((n) > 3 ? -1 : 0, (n) > 2 ? -1 : 0, (n) > 1 ? -1 : 0, (n) > 0 ? -1 : 0)
#include "sgd_step_impl.h"
#include "sgd_step_undef.h"

#define REAL float
#define VEC __m256
#define MASKV __m256i
#define VL 8
#define SUFFIX f32
#define V_FMA _mm256_fmadd_ps
#define V_ZERO _mm256_setzero_ps
#define V_LOAD _mm256_loadu_ps
#define V_STORE _mm256_storeu_ps
#define V_BCAST _mm256_broadcast_ss
#define V_MUL _mm256_mul_ps
#define V_ADD _mm256_add_ps
#define V_SET1(a) _mm256_set1_ps((float)(a))
#define V_MASKLOAD _mm256_maskload_ps
#define V_MASKSTORE _mm256_maskstore_ps
#define LANE_MASK(n) _mm256_set_epi32((n) > 7 ? -1 : 0, (n) > 6 ? -1 : 0, (n) > 5 ? -1 : 0, (n) > 4 ? -1 : 0, \
                                      (n) > 3 ? -1 : 0, (n) > 2 ? -1 : 0, (n) > 1 ? -1 : 0, (n) > 0 ? -1 : 0)
#include "sgd_step_impl.h"
#endif
