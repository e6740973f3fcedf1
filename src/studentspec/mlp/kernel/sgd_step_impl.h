/* The type-generic body of sgd_step.c, included once per precision. Before including, define
 * REAL (double/float), VEC (its 256- or 512-bit vector), VL (lanes), SUFFIX (f64/f32), the V_* vector
 * operations and LANE_MASK(n). Tiles named 4x12, 6x8 and 8x1 are 4 x 3VL, 6 x 2VL and 8 x VL elements. */

static MASKV SFX(lane_mask)(int n) { /* the first n (0..VL) lanes on */
    return LANE_MASK(n);
}

static void SFX(store_rows)(const VEC *r, int nv, int rows, REAL *C, long ldc, int cols, double alpha, int acc_into) {
    VEC al = V_SET1(alpha);
    for (int i = 0; i < rows; i++, C += ldc)
        for (int v = 0; v < nv; v++) {
            int left = cols - VL * v;
            if (left <= 0) break;
            VEC t = V_MUL(al, r[i * nv + v]);
            if (left >= VL) {
                V_STORE(C + VL * v, acc_into ? V_ADD(V_LOAD(C + VL * v), t) : t);
            } else {
                MASKV m = SFX(lane_mask)(left);
                if (acc_into) t = V_ADD(V_MASKLOAD(C + VL * v, m), t);
                V_MASKSTORE(C + VL * v, m, t);
            }
        }
}

TILE_4x12(SFX(tile_4x12), PLAIN)
TILE_4x12(SFX(tile_4x12_m), MASKED)
TILE_6x8(SFX(tile_6x8), PLAIN)
TILE_6x8(SFX(tile_6x8_m), MASKED)
TILE_8x1(SFX(tile_8x1), PLAIN)
TILE_8x1(SFX(tile_8x1_m), MASKED)
#ifdef __AVX512F__
TILE_8x12(SFX(tile_8x12), PLAIN)
TILE_8x12(SFX(tile_8x12_m), MASKED)
#endif

typedef void (*SFX(Tile))(int, const REAL *, long, long, int, const REAL *, long, REAL *, long, int, double, int, const MASKV *);

/* C[M, N] (=|+=) alpha * A @ B, A[m, k] = A[m*sam + k*sak], B row-major [K, N] (leading dim ldb). */
static void SFX(gemm)(int M, int N, int K, const REAL *A, long sam, long sak, const REAL *B, long ldb, REAL *C,
                 long ldc, double alpha, int acc_into, Prefetch *pf) {
    /* 6 x 2VL tiles: exact for the [width, batch] products; for 256-bit float32 everywhere (its 4 x 24 tiles wasted
     * most of their last block on widths like 100 and 50: S=32 35 % -> 46 % of peak). The 512-bit build's wide
     * 8 x 3VL tiles with one-vector edges beat 6 x 2VL for float32 too (step +10 %, evaluation -8 %). */
    int narrow = (sizeof(REAL) == 4 && VL == 8) || (N % (2 * VL) == 0 && N <= 8 * VL);
    int NR = narrow ? 2 * VL : 3 * VL;
    for (int n0 = 0; n0 < N; n0 += NR) { /* a panel of B stays in L1 across the row blocks */
        int cols = N - n0 < NR ? N - n0 : NR, MR;
        MASKV mk[3];
        for (int v = 0; v < 3; v++) mk[v] = SFX(lane_mask)(cols - VL * v < 0 ? 0 : (cols - VL * v > VL ? VL : cols - VL * v));
        SFX(Tile) tile;
        if (cols <= VL) { /* an edge panel of one vector (e.g. the last 4 of 100 columns): 8 x VL tiles, not a wide tile mostly masked off */
            MR = 8;
            tile = cols == VL ? SFX(tile_8x1) : SFX(tile_8x1_m);
        } else if (narrow || cols <= 2 * VL) {
            MR = 6;
            tile = cols == 2 * VL ? SFX(tile_6x8) : SFX(tile_6x8_m);
        } else {
#ifdef __AVX512F__ /* 32 registers: 8 x 3VL tiles (24 accumulators) read each panel of B half as often */
            MR = 8;
            tile = cols == 3 * VL ? SFX(tile_8x12) : SFX(tile_8x12_m);
#else
            MR = 4;
            tile = cols == 3 * VL ? SFX(tile_4x12) : SFX(tile_4x12_m);
#endif
        }
        for (int m0 = 0; m0 < M; m0 += MR) {
            int rows = M - m0 < MR ? M - m0 : MR;
            pf_some(pf, 3);
            tile(K, A + m0 * sam, sam, sak, rows, B + n0, ldb, C + (long)m0 * ldc + n0, ldc, cols, alpha, acc_into, mk);
        }
    }
}

static void SFX(transpose)(int R, int Cn, const REAL *src, REAL *dst) {
    for (int i = 0; i < R; i++)
        for (int j = 0; j < Cn; j++) dst[(long)j * R + i] = src[(long)i * Cn + j];
}

/* The objective (enum ss_objective, defined in sgd_step.h) of one seed's output [B, C] against y, its gradient
 * written over `out`; *sq gets sum (out - y)^2. Cross-entropy is to the argmax of y. */
static double SFX(loss_and_grad)(int B, int C, REAL *out, const REAL *y, enum ss_objective obj, double *sq) {
    double total = 0.0;
    *sq = 0.0;
    if (obj != SS_CE) { /* half_sse and mse: the squares, then the gradient d * scale */
        double scale = obj == SS_MSE ? 2.0 / ((double)B * C) : 1.0 / (double)B;
        for (long i = 0; i < (long)B * C; i++) {
            double diff = (double)out[i] - y[i];
            total += diff * diff;
            out[i] = (REAL)(diff * scale);
        }
        *sq = total;
        return obj == SS_MSE ? total / ((double)B * C) : total * (0.5 / (double)B);
    }
    for (long i = 0; i < (long)B * C; i++) *sq += ((double)out[i] - y[i]) * ((double)out[i] - y[i]);
    for (int b = 0; b < B; b++) {
        REAL *o = out + (long)b * C;
        const REAL *t = y + (long)b * C;
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
        for (int c = 0; c < C; c++) o[c] = (REAL)(exp(o[c] - lse) / B);
        o[label] -= (REAL)(1.0 / B);
    }
    return total / B;
}


/* db[j] += scale * sum over r of g[r, j], each sum in double over r in order: the sums of a block of columns run side
 * by side (vector lanes), not one long dependent chain per column (evaluation's batches have hundreds of rows). */
static void SFX(bias_grad)(int B, int b, const REAL *g, REAL *db, double scale) {
    double acc[256];
    for (int j0 = 0; j0 < b; j0 += 256) {
        int n = b - j0 < 256 ? b - j0 : 256;
        for (int j = 0; j < n; j++) acc[j] = 0.0;
        for (int r = 0; r < B; r++) {
            const REAL *gr = g + (long)r * b + j0;
            for (int j = 0; j < n; j++) acc[j] += gr[j];
        }
        for (int j = 0; j < n; j++) db[j0 + j] += (REAL)(scale * acc[j]);
    }
}

/* What a pass over one seed does besides forward and loss: an SGD update (gW == NULL), or
 * adding gscale * the gradient to gW, gb without touching the parameters (evaluation). */
typedef struct {
    int backward;    /* 0: forward and loss only */
    double lr, gscale;
    REAL **gW, **gb;
    REAL **hidden; /* if set, hidden layer l's activations go to hidden[l - 1] [S, B, w_l] */
    double *sq;    /* if set, sq[s] = sum over the batch of (out - y)^2 */
} SFX(Mode);

/* This precision's net and batch structs (sgd_step.h); both names are undefined at the end of this file. */
#define NET struct SFX(ss_net)
#define BATCH struct SFX(ss_batch)

/* Start moving seed s's parameters towards L2 while another seed computes (read in order: the hardware streams the rest). */
static void SFX(prefetch_params)(int s, const NET *net) {
    const int *widths = net->widths;
    for (int l = 0; l < net->L; l++) {
        const char *w = (const char *)(net->W[l] + (long)s * widths[l] * widths[l + 1]);
        for (long o = 0; o < (long)widths[l] * widths[l + 1] * (long)sizeof(REAL); o += 64) _mm_prefetch(w + o, _MM_HINT_T1);
    }
}

/* Queue the lines of seed s's batch rows ids[0:B] (x and y) for the next pass to prefetch; none without ids. */
static void SFX(queue_rows)(Prefetch *p, int s, const NET *net, const BATCH *batch, const long *ids) {
    int in = net->widths[0], out = net->widths[net->L];
    p->n = p->i = 0;
    for (int r = 0; ids && r < batch->B; r++) {
        pf_add(p, batch->x + ((long)s * batch->rows + ids[r]) * in, (long)in * (long)sizeof(REAL));
        pf_add(p, batch->y + ((long)s * batch->rows + ids[r]) * out, (long)out * (long)sizeof(REAL));
    }
}

/* Seed s's batch: its inputs into *x and its teacher outputs returned, read in place or, with idx, its rows
 * idx[s, :] gathered into xb, yb (no batch tensor). */
static const REAL *SFX(seed_batch)(int s, const NET *net, const BATCH *batch, REAL *xb, REAL *yb, REAL **x) {
    int B = batch->B, in = net->widths[0], out = net->widths[net->L];
    long rows = batch->rows ? batch->rows : B; /* rows from one seed's block to the next */
    if (!batch->idx) {
        *x = (REAL *)batch->x + (long)s * rows * in;
        return batch->y + (long)s * rows * out;
    }
    for (int r = 0; r < B; r++) {
        long row = batch->idx[(long)s * B + r];
        memcpy(xb + (long)r * in, batch->x + ((long)s * rows + row) * in, sizeof(REAL) * in);
        memcpy(yb + (long)r * out, batch->y + ((long)s * rows + row) * out, sizeof(REAL) * out);
    }
    *x = xb;
    return yb;
}

/* Seed s's forward pass: h[l + 1] = psi(h[l] W_l + b_l) for every layer, the top one without psi. */
static void SFX(forward)(int s, const NET *net, int B, REAL **h, Prefetch *pf) {
    int L = net->L, leaky = net->act == SS_ACT_LEAKY_RELU;
    double slope = net->slope;
    for (int l = 0; l < L; l++) {
        int a = net->widths[l], b = net->widths[l + 1];
        const REAL *w = net->W[l] + (long)s * a * b, *c = net->bias[l] + (long)s * b;
        REAL *z = h[l + 1];
        SFX(gemm)(B, b, a, h[l], a, 1, w, b, z, b, 1.0, 0, pf);
        for (int r = 0; r < B; r++)
            for (int j = 0; j < b; j++) {
                REAL v = z[(long)r * b + j] + c[j];
                z[(long)r * b + j] = l == L - 1 || v > 0 ? v : (leaky ? (REAL)(slope * v) : 0);
            }
    }
}

/* Seed s's backward pass from g = dLoss/dout (over h[L]): an SGD update of its parameters, or gscale * the gradient
 * added to gW, gb (mode). */
static void SFX(backward)(int s, const NET *net, int B, REAL **h, const SFX(Mode) *mode, REAL *work, const Layout *at,
                          Prefetch *pf) {
    int leaky = net->act == SS_ACT_LEAKY_RELU;
    double slope = net->slope;
    REAL *g = h[net->L], *gT = work + at->gT, *belowT = work + at->belowT, *ga = work + at->ga, *gb = work + at->gb;
    REAL *wT = work + at->wT;
    for (int l = net->L - 1; l >= 0; l--) {
        int a = net->widths[l], b = net->widths[l + 1];
        REAL *w = net->W[l] + (long)s * a * b, *c = net->bias[l] + (long)s * b;
        /* the signal below, through W before its update: element (r, i) is sum over k of W[i, k] g[r, k] in k order
         * either way, so the same bits; as g W^T [B, a] where W is the smaller to transpose (evaluation's batches),
         * else as W g^T [a, B] (training's) */
        int rowwise = (long)a * b <= (long)B * at->widest;
        if (l > 0 && rowwise) {
            SFX(transpose)(a, b, w, wT);
            SFX(gemm)(B, a, b, g, b, 1, wT, a, belowT, a, 1.0, 0, pf);
        } else if (l > 0) {
            SFX(transpose)(B, b, g, gT);
            SFX(gemm)(a, B, b, w, b, 1, gT, B, belowT, B, 1.0, 0, pf);
        }
        REAL *dw = mode->gW ? mode->gW[l] + (long)s * a * b : w, *db = mode->gW ? mode->gb[l] + (long)s * b : c;
        double scale = mode->gW ? mode->gscale : -mode->lr;
        SFX(gemm)(a, b, B, h[l], 1, a, g, b, dw, b, scale, 1, pf); /* W -= lr h^T g, or gW += gscale h^T g */
        SFX(bias_grad)(B, b, g, db, scale);
        if (l > 0) { /* g <- the signal below * psi'(z): h > 0 exactly where z > 0 (slope > 0) */
            REAL *next = g == ga ? gb : ga, *hl = h[l];
            long si = rowwise ? 1 : B, sr = rowwise ? a : 1; /* its strides over i and r */
            for (int r = 0; r < B; r++)
                for (int i = 0; i < a; i++) {
                    REAL v = belowT[i * si + r * sr];
                    next[(long)r * a + i] = hl[(long)r * a + i] > 0 ? v : (leaky ? (REAL)(slope * v) : 0);
                }
            g = next;
        }
    }
}

/* One seed (see ss_sgd_step and ss_forward_grad), in its own workspace: forward, loss, then backward (mode). */
static void SFX(seed_pass)(int s, const NET *net, const BATCH *batch, const SFX(Mode) *mode, const unsigned char *alive,
                           double *loss, REAL *work, Prefetch *pf) {
    if (alive && !alive[s]) {
        loss[s] = NAN;
        return;
    }
    int L = net->L, B = batch->B;
    Layout at = layout(L, net->widths, B);
    REAL *h[SS_MAX_LAYERS + 1]; /* h[l]: input of layer l ([B, w_l]); h[L]: the output, then dLoss/dout */
    for (int l = 1; l <= L; l++)
        h[l] = mode->hidden && l < L ? mode->hidden[l - 1] + (long)s * B * net->widths[l] : work + at.h[l];
    const REAL *ys = SFX(seed_batch)(s, net, batch, work + at.xb, work + at.yb, &h[0]);
    SFX(forward)(s, net, B, h, pf);
    double sq;
    loss[s] = SFX(loss_and_grad)(B, net->widths[L], h[L], ys, net->obj, &sq);
    if (mode->sq) mode->sq[s] = sq;
    if (!mode->backward) return;
    if (!mode->gW && !isfinite(loss[s])) return; /* an update would spoil the parameters: keep them */
    SFX(backward)(s, net, B, h, mode, work, &at, pf);
}

static void SFX(all_seeds)(const NET *net, const BATCH *batch, const SFX(Mode) *mode, const unsigned char *alive,
                           double *loss, REAL *work, int threads) {
    int S = net->S, B = batch->B;
    const long *idx = batch->idx;
    long ws = ss_workspace(net->L, net->widths, B);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int s = 0; s < S; s++) {
        Prefetch pf; /* the next seed's batch rows (and parameters) move towards L2 while this one computes */
        SFX(queue_rows)(&pf, s + 1, net, batch, idx && s + 1 < S ? idx + (long)(s + 1) * B : NULL);
        if (s + 1 < S) SFX(prefetch_params)(s + 1, net);
        SFX(seed_pass)(s, net, batch, mode, alive, loss, work + ws * omp_get_thread_num(), &pf);
        pf_some(&pf, PF_LINES);
    }
}

/* One step for every seed with alive[s] (NULL: every seed): loss[s] is its loss on its batch; if that is finite its
 * parameters take the SGD step W -= lr dW, b -= lr db, else they are left as they were. Dead seeds are skipped
 * (loss NaN). Seeds are shared out over `threads` threads, each with its own ss_workspace() elements of `work`; a
 * seed's numbers do not depend on the split. */
void SFX(ss_sgd_step)(const NET *net, const BATCH *batch, double lr, const unsigned char *alive, double *loss,
                      REAL *work, int threads) {
    SFX(Mode) mode = {.backward = 1, .lr = lr};
    SFX(all_seeds)(net, batch, &mode, alive, loss, work, threads);
}

/* T consecutive steps of ss_sgd_step with batch->idx [T, S, B] (batch rows of each step) and loss [T, S], run seed
 * after seed: a seed's T steps follow one another while its parameters stay in L2 (step after step over the whole
 * ensemble streamed every seed's parameters through L3 once per step). A seed's numbers are the same as T
 * ss_sgd_step calls': after a non-finite loss it takes no further step and its later losses are NaN, as a seed
 * marked dead. */
void SFX(ss_sgd_steps)(int T, const NET *net, const BATCH *batch, double lr, const unsigned char *alive, double *loss,
                       REAL *work, int threads) {
    SFX(Mode) mode = {.backward = 1, .lr = lr};
    int S = net->S, B = batch->B;
    long ws = ss_workspace(net->L, net->widths, B);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int s = 0; s < S; s++) {
        REAL *wk = work + ws * omp_get_thread_num();
        Prefetch pf;
        int live = !alive || alive[s];
        for (int t = 0; t < T; t++) {
            /* the next step's rows; before the last, the next seed's parameters and first rows */
            int s1 = t + 1 < T ? s : s + 1, t1 = t + 1 < T ? t + 1 : 0;
            SFX(queue_rows)(&pf, s1, net, batch, s1 < S ? batch->idx + ((long)t1 * S + s1) * B : NULL);
            if (t + 1 == T && s + 1 < S) SFX(prefetch_params)(s + 1, net);
            double *lt = loss + (long)t * S;
            if (!live) {
                lt[s] = NAN;
                continue;
            }
            BATCH step = {.B = B, .x = batch->x, .y = batch->y, .rows = batch->rows,
                          .idx = batch->idx + (long)t * S * B};
            SFX(seed_pass)(s, net, &step, &mode, NULL, lt, wk, &pf);
            pf_some(&pf, PF_LINES);
            live = isfinite(lt[s]);
        }
    }
}

/* Forward, loss and gradient of every seed on its batch, parameters untouched (evaluation): see struct ss_eval. */
void SFX(ss_forward_grad)(const NET *net, const BATCH *batch, const struct SFX(ss_eval) *out, REAL *work, int threads) {
    SFX(Mode) mode = {.backward = out->gW != NULL, .gscale = out->gscale, .gW = out->gW, .gb = out->gb,
                      .hidden = out->hidden, .sq = out->sq};
    SFX(all_seeds)(net, batch, &mode, NULL, out->loss, work, threads);
}

/* One chunk of the streaming Pearson sums of ensemble/corr.py's CorrAccumulator (struct ss_corr), for every seed: with
 * tc = t - shift_t and hc = h - shift_s in double, sum_t += sum_r tc, sq_t += sum_r tc^2, sum_s += sum_r hc,
 * sq_s += sum_r hc^2 (each over r in order) and cross += tc^T hc through the float64 register tiles (each element
 * summed over r in order, then added), whatever REAL is. */
void SFX(ss_corr_update)(int S, int B, const REAL *t, long t_rows, const REAL *h, long h_rows,
                         const struct ss_corr *acc, double *work, int threads) {
    int m = acc->m, n = acc->n;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int s = 0; s < S; s++) {
        double *tc = work + (long)B * (m + n) * (threads > 1 ? omp_get_thread_num() : 0), *hc = tc + (long)B * m;
        const double *at = acc->shift_t + (long)s * m, *as = acc->shift_s + (long)s * n;
        double *st = acc->sum_t + (long)s * m, *qt = acc->sq_t + (long)s * m;
        double *ss = acc->sum_s + (long)s * n, *qs = acc->sq_s + (long)s * n;
        for (int r = 0; r < B; r++) {
            const REAL *tr = t + ((long)s * t_rows + r) * m, *hr = h + ((long)s * h_rows + r) * n;
            double *tcr = tc + (long)r * m, *hcr = hc + (long)r * n;
            for (int j = 0; j < m; j++) {
                tcr[j] = (double)tr[j] - at[j];
                st[j] += tcr[j];
                qt[j] = fma(tcr[j], tcr[j], qt[j]); /* fma(): the same rounding in vector body and remainder */
            }
            for (int k = 0; k < n; k++) {
                hcr[k] = (double)hr[k] - as[k];
                ss[k] += hcr[k];
                qs[k] = fma(hcr[k], hcr[k], qs[k]);
            }
        }
        gemm_f64(m, n, B, tc, 1, m, hc, n, acc->cross + (long)s * m * n, n, 1.0, 1, NULL);
    }
}

#undef NET
#undef BATCH
