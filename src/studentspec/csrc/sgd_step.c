/* One plain-SGD step of an ensemble of MLPs, float64, one seed after another (AVX2 + FMA).
 *
 * Why: the batched-BLAS step multiplies many 16 x 100 x 100 matrices and reaches about a third
 * of the GEMM peak; here each seed's forward, backward and update run back to back while its
 * weights are in cache, and the small products go through register-tiled kernels.
 * Layouts (row-major, seed axis first): x [S, B, w0], y [S, B, wL], W_l [S, w_l, w_{l+1}],
 * b_l [S, w_{l+1}]; layer l computes h_{l+1} = psi(h_l W_l + b_l), the top layer is linear.
 * Every seed is computed by the same instructions whatever S is, so a seed gives the same bits
 * alone and inside an ensemble.
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#define FMA(c, a, b) c = _mm256_fmadd_pd(a, b, c)

/* Register tiles: C[0:rows, 0:cols] (=|+=) alpha * A[0:rows, 0:K] @ B[0:K, 0:cols], where
 * A[i, k] = A[i*sam + k*sak] (any strides, read one scalar at a time) and B is row-major.
 * Named accumulators (not arrays) so the compiler keeps them in registers. Rows past `rows`
 * repeat row 0 and are not stored; columns past `cols` are masked (the _m variants). */
#define TILE_4x12(NAME, LOAD)                                                                                 \
    static void NAME(int K, const double *A, long sam, long sak, int rows, const double *B, long ldb,         \
                     double *C, long ldc, int cols, double alpha, int acc_into, const __m256i *mk) {          \
        __m256d c00 = _mm256_setzero_pd(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;           \
        __m256d c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;                           \
        const double *a0 = A, *a1 = rows > 1 ? A + sam : A, *a2 = rows > 2 ? A + 2 * sam : A;               \
        const double *a3 = rows > 3 ? A + 3 * sam : A;                                                       \
        (void)mk;                                                                                            \
        for (int k = 0; k < K; k++, B += ldb, a0 += sak, a1 += sak, a2 += sak, a3 += sak) {                  \
            __m256d b0 = LOAD(B, 0), b1 = LOAD(B + 4, 1), b2 = LOAD(B + 8, 2), x;                          \
            x = _mm256_broadcast_sd(a0); FMA(c00, x, b0); FMA(c01, x, b1); FMA(c02, x, b2);                \
            x = _mm256_broadcast_sd(a1); FMA(c10, x, b0); FMA(c11, x, b1); FMA(c12, x, b2);                \
            x = _mm256_broadcast_sd(a2); FMA(c20, x, b0); FMA(c21, x, b1); FMA(c22, x, b2);                \
            x = _mm256_broadcast_sd(a3); FMA(c30, x, b0); FMA(c31, x, b1); FMA(c32, x, b2);                \
        }                                                                                                    \
        __m256d r[4][3] = {{c00, c01, c02}, {c10, c11, c12}, {c20, c21, c22}, {c30, c31, c32}};             \
        store_rows(&r[0][0], 3, rows, C, ldc, cols, alpha, acc_into);                                        \
    }
#define TILE_6x8(NAME, LOAD)                                                                                  \
    static void NAME(int K, const double *A, long sam, long sak, int rows, const double *B, long ldb,         \
                     double *C, long ldc, int cols, double alpha, int acc_into, const __m256i *mk) {          \
        __m256d c00 = _mm256_setzero_pd(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;           \
        __m256d c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;                           \
        const double *a0 = A, *a1 = rows > 1 ? A + sam : A, *a2 = rows > 2 ? A + 2 * sam : A;               \
        const double *a3 = rows > 3 ? A + 3 * sam : A, *a4 = rows > 4 ? A + 4 * sam : A;                    \
        const double *a5 = rows > 5 ? A + 5 * sam : A;                                                       \
        (void)mk;                                                                                            \
        for (int k = 0; k < K; k++, B += ldb, a0 += sak, a1 += sak, a2 += sak, a3 += sak, a4 += sak,        \
                 a5 += sak) {                                                                                \
            __m256d b0 = LOAD(B, 0), b1 = LOAD(B + 4, 1), x;                                                \
            x = _mm256_broadcast_sd(a0); FMA(c00, x, b0); FMA(c01, x, b1);                                 \
            x = _mm256_broadcast_sd(a1); FMA(c10, x, b0); FMA(c11, x, b1);                                 \
            x = _mm256_broadcast_sd(a2); FMA(c20, x, b0); FMA(c21, x, b1);                                 \
            x = _mm256_broadcast_sd(a3); FMA(c30, x, b0); FMA(c31, x, b1);                                 \
            x = _mm256_broadcast_sd(a4); FMA(c40, x, b0); FMA(c41, x, b1);                                 \
            x = _mm256_broadcast_sd(a5); FMA(c50, x, b0); FMA(c51, x, b1);                                 \
        }                                                                                                    \
        __m256d r[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};         \
        store_rows(&r[0][0], 2, rows, C, ldc, cols, alpha, acc_into);                                        \
    }

static __m256i lane_mask(int n) { /* the first n (0..4) lanes on */
    return _mm256_set_epi64x(n > 3 ? -1 : 0, n > 2 ? -1 : 0, n > 1 ? -1 : 0, n > 0 ? -1 : 0);
}

static void store_rows(const __m256d *r, int nv, int rows, double *C, long ldc, int cols, double alpha, int acc_into) {
    __m256d al = _mm256_set1_pd(alpha);
    for (int i = 0; i < rows; i++, C += ldc)
        for (int v = 0; v < nv; v++) {
            int left = cols - 4 * v;
            if (left <= 0) break;
            __m256d t = _mm256_mul_pd(al, r[i * nv + v]);
            if (left >= 4) {
                _mm256_storeu_pd(C + 4 * v, acc_into ? _mm256_add_pd(_mm256_loadu_pd(C + 4 * v), t) : t);
            } else {
                __m256i m = lane_mask(left);
                if (acc_into) t = _mm256_add_pd(_mm256_maskload_pd(C + 4 * v, m), t);
                _mm256_maskstore_pd(C + 4 * v, m, t);
            }
        }
}

#define PLAIN(p, v) _mm256_loadu_pd(p)
#define MASKED(p, v) _mm256_maskload_pd(p, mk[v])
TILE_4x12(tile_4x12, PLAIN)
TILE_4x12(tile_4x12_m, MASKED)
TILE_6x8(tile_6x8, PLAIN)
TILE_6x8(tile_6x8_m, MASKED)

/* C[M, N] (=|+=) alpha * A @ B, A[m, k] = A[m*sam + k*sak], B row-major [K, N] (leading dim ldb). */
static void gemm(int M, int N, int K, const double *A, long sam, long sak, const double *B, long ldb, double *C,
                 long ldc, double alpha, int acc_into) {
    int narrow = N % 8 == 0 && N <= 32; /* [width, batch] products: 6 x 8 tiles cover them exactly */
    int MR = narrow ? 6 : 4, NR = narrow ? 8 : 12;
    for (int n0 = 0; n0 < N; n0 += NR) { /* a panel of B stays in L1 across the row blocks */
        int cols = N - n0 < NR ? N - n0 : NR;
        __m256i mk[3];
        for (int v = 0; v < 3; v++) mk[v] = lane_mask(cols - 4 * v < 0 ? 0 : (cols - 4 * v > 4 ? 4 : cols - 4 * v));
        for (int m0 = 0; m0 < M; m0 += MR) {
            int rows = M - m0 < MR ? M - m0 : MR;
            const double *a = A + m0 * sam;
            double *c = C + (long)m0 * ldc + n0;
            if (narrow)
                (cols == 8 ? tile_6x8 : tile_6x8_m)(K, a, sam, sak, rows, B + n0, ldb, c, ldc, cols, alpha, acc_into, mk);
            else
                (cols == 12 ? tile_4x12 : tile_4x12_m)(K, a, sam, sak, rows, B + n0, ldb, c, ldc, cols, alpha, acc_into, mk);
        }
    }
}

static void transpose(int R, int Cn, const double *src, double *dst) {
    for (int i = 0; i < R; i++)
        for (int j = 0; j < Cn; j++) dst[(long)j * R + i] = src[(long)i * Cn + j];
}

/* Loss of one seed's output [B, C] and its gradient written over `out`; *sq gets sum (out - y)^2. */
static double loss_and_grad(int B, int C, double *out, const double *y, int ce, double *sq) {
    double total = 0.0;
    *sq = 0.0;
    if (ce)
        for (long i = 0; i < (long)B * C; i++) *sq += (out[i] - y[i]) * (out[i] - y[i]);
    if (!ce) {
        double scale = 2.0 / ((double)B * C);
        for (long i = 0; i < (long)B * C; i++) {
            double diff = out[i] - y[i];
            total += diff * diff;
            out[i] = diff * scale;
        }
        *sq = total;
        return total / ((double)B * C);
    }
    for (int b = 0; b < B; b++) {
        double *o = out + (long)b * C;
        const double *t = y + (long)b * C;
        int label = 0;
        double top = o[0];
        for (int c = 1; c < C; c++) {
            if (t[c] > t[label]) label = c;
            if (o[c] > top) top = o[c];
        }
        double sum = 0.0;
        for (int c = 0; c < C; c++) sum += exp(o[c] - top);
        double lse = top + log(sum);
        total += lse - o[label];
        for (int c = 0; c < C; c++) o[c] = exp(o[c] - lse) / B;
        o[label] -= 1.0 / B;
    }
    return total / B;
}

/* Doubles of workspace ss_sgd_step needs. */
long ss_workspace(int L, const int *widths, int B) {
    long total = 0, widest = 0;
    for (int l = 1; l <= L; l++) total += (long)B * widths[l];
    for (int l = 0; l <= L; l++) widest = widths[l] > widest ? widths[l] : widest;
    return total + 4 * (long)B * widest + (long)B * (widths[0] + widths[L]);
}

/* What a pass over one seed does besides forward and loss: an SGD update (gW == NULL), or
 * adding gscale * the gradient to gW, gb without touching the parameters (evaluation). */
typedef struct {
    int backward;    /* 0: forward and loss only */
    double lr, gscale;
    double **gW, **gb;
    double **hidden; /* if set, hidden layer l's activations go to hidden[l - 1] [S, B, w_l] */
    double *sq;      /* if set, sq[s] = sum over the batch of (out - y)^2 */
} Mode;

/* One seed (see ss_sgd_step and ss_forward_grad), with its own workspace. */
static void seed_pass(int s, int S, int L, const int *widths, int B, const double *x, const double *y,
                      const long *idx, long n_rows, double **W, double **bias, int act, double slope, int ce,
                      const Mode *mode, const unsigned char *alive, double *loss, double *work) {
    int widest = 0;
    for (int l = 0; l <= L; l++) widest = widths[l] > widest ? widths[l] : widest;
    double *h[64]; /* h[l]: input of layer l ([B, w_l]); h[L]: the output, then dLoss/dout */
    double *p = work;
    for (int l = 1; l <= L; l++, p += (long)B * widths[l - 1]) h[l] = p;
    if (mode->hidden)
        for (int l = 1; l < L; l++) h[l] = mode->hidden[l - 1] + (long)s * B * widths[l];
    double *gT = p, *belowT = gT + (long)B * widest, *ga = belowT + (long)B * widest, *gb = ga + (long)B * widest;
    double *xb = gb + (long)B * widest, *yb = xb + (long)B * widths[0];
    int in = widths[0], out = widths[L];
    if (alive && !alive[s]) {
        loss[s] = NAN;
        return;
    }
    if (s + 1 < S) /* the next seed's parameters start moving towards L2 while this one computes */
        for (int l = 0; l < L; l++) {
            const char *w = (const char *)(W[l] + (long)(s + 1) * widths[l] * widths[l + 1]);
            for (long o = 0; o < (long)widths[l] * widths[l + 1] * 8; o += 64) _mm_prefetch(w + o, _MM_HINT_T1);
        }
    long rows = idx || !n_rows ? B : n_rows; /* rows between two seeds' batches */
    const double *ys = y + (long)s * rows * out;
    h[0] = (double *)x + (long)s * rows * in;
    if (idx) { /* rows idx[s, :] of this seed's training set [n_rows, w]: gathered here, no batch tensor */
        for (int r = 0; r < B; r++) {
            long row = idx[(long)s * B + r];
            memcpy(xb + (long)r * in, x + ((long)s * n_rows + row) * in, sizeof(double) * in);
            memcpy(yb + (long)r * out, y + ((long)s * n_rows + row) * out, sizeof(double) * out);
        }
        h[0] = xb;
        ys = yb;
    }
    for (int l = 0; l < L; l++) {
        int a = widths[l], b = widths[l + 1];
        const double *w = W[l] + (long)s * a * b, *c = bias[l] + (long)s * b;
        double *z = h[l + 1];
        gemm(B, b, a, h[l], a, 1, w, b, z, b, 1.0, 0);
        for (int r = 0; r < B; r++)
            for (int j = 0; j < b; j++) {
                double v = z[(long)r * b + j] + c[j];
                z[(long)r * b + j] = l == L - 1 || v > 0 ? v : (act ? slope * v : 0.0);
            }
    }
    double *g = h[L];
    double sq;
    loss[s] = loss_and_grad(B, out, g, ys, ce, &sq);
    if (mode->sq) mode->sq[s] = sq;
    if (!mode->backward) return;
    if (!mode->gW && !isfinite(loss[s])) return; /* an update would spoil the parameters: keep them */
    for (int l = L - 1; l >= 0; l--) {
        int a = widths[l], b = widths[l + 1];
        double *w = W[l] + (long)s * a * b, *c = bias[l] + (long)s * b;
        if (l > 0) { /* the signal below, through W before its update: belowT = W g^T */
            transpose(B, b, g, gT);
            gemm(a, B, b, w, b, 1, gT, B, belowT, B, 1.0, 0);
        }
        double *dw = mode->gW ? mode->gW[l] + (long)s * a * b : w, *db = mode->gW ? mode->gb[l] + (long)s * b : c;
        double scale = mode->gW ? mode->gscale : -mode->lr;
        gemm(a, b, B, h[l], 1, a, g, b, dw, b, scale, 1); /* W -= lr h^T g, or gW += gscale h^T g */
        for (int j = 0; j < b; j++) {
            double sum = 0.0;
            for (int r = 0; r < B; r++) sum += g[(long)r * b + j];
            db[j] += scale * sum;
        }
        if (l > 0) { /* g <- (belowT)^T * psi'(z): h > 0 exactly where z > 0 (slope > 0) */
            double *next = g == ga ? gb : ga, *hl = h[l];
            for (int r = 0; r < B; r++)
                for (int i = 0; i < a; i++) {
                    double v = belowT[(long)i * B + r];
                    next[(long)r * a + i] = hl[(long)r * a + i] > 0 ? v : (act ? slope * v : 0.0);
                }
            g = next;
        }
    }
}

static void all_seeds(int S, int L, const int *widths, int B, const double *x, const double *y, const long *idx,
                      long n_rows, double **W, double **bias, int act, double slope, int ce, const Mode *mode,
                      const unsigned char *alive, double *loss, double *work, int threads) {
    long ws = ss_workspace(L, widths, B);
    if (threads <= 1) { /* no thread team for the one-thread case (sweep workers) */
        for (int s = 0; s < S; s++) seed_pass(s, S, L, widths, B, x, y, idx, n_rows, W, bias, act, slope, ce, mode, alive, loss, work);
        return;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int s = 0; s < S; s++)
        seed_pass(s, S, L, widths, B, x, y, idx, n_rows, W, bias, act, slope, ce, mode, alive, loss,
                  work + ws * omp_get_thread_num());
}

/* One step for every seed with alive[s]: loss[s] is its loss on (x, y); if that is finite its
 * parameters take the SGD step W -= lr dW, b -= lr db, else they are left as they were.
 * Dead seeds are skipped (loss NaN). act: 0 ReLU, 1 Leaky ReLU; ce: 0 MSE (mean over B and C),
 * 1 cross-entropy on argmax(y) (mean over B). With idx ([S, B] row numbers), x and y are whole
 * training sets [S, n_rows, w] and the batch is gathered from them; else they are the batch.
 * Seeds are shared out over `threads` threads, each with its own ss_workspace() doubles of
 * `work`; a seed's numbers do not depend on the split. */
void ss_sgd_step(int S, int L, const int *widths, int B, const double *x, const double *y, const long *idx, long n_rows,
                 double **W, double **bias, int act, double slope, int ce, double lr, const unsigned char *alive,
                 double *loss, double *work, int threads) {
    Mode mode = {1, lr, 0.0, NULL, NULL, NULL, NULL};
    all_seeds(S, L, widths, B, x, y, idx, n_rows, W, bias, act, slope, ce, &mode, alive, loss, work, threads);
}

/* Forward, loss and gradient of every seed on a batch, parameters untouched (evaluation):
 * loss[s], sq[s] = sum (out - y)^2, hidden activations into hidden[l - 1] [S, B, w_l] (if
 * hidden), and gW[l] += gscale dLoss/dW_l, gb[l] += gscale dLoss/db_l (if gW). Seed s's batch
 * is the B rows from x + s * seed_rows * w0 (and likewise y): a slice of a bigger set, uncopied. */
void ss_forward_grad(int S, int L, const int *widths, int B, const double *x, const double *y, long seed_rows, double **W,
                     double **bias,
                     int act, double slope, int ce, double **hidden, double *loss, double *sq, double **gW, double **gb,
                     double gscale, double *work, int threads) {
    Mode mode = {gW != NULL, 0.0, gscale, gW, gb, hidden, sq};
    all_seeds(S, L, widths, B, x, y, NULL, seed_rows, W, bias, act, slope, ce, &mode, NULL, loss, work, threads);
}
