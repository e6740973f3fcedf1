/* The compiled step's contract, written once: sgd_step.c #includes this header (so the C compiler checks each
 * definition against it) and the Python binding (__init__.py) feeds the same text, less its preprocessor lines, to
 * cffi's ffi.cdef (so every call from Python is checked for argument count and types, and the enum constants below
 * are read from here: Python holds no number of its own for an objective, an activation or a limit).
 * Plain C declarations only: no macros, no #include, every enum value written out (cffi's ABI mode needs them).
 * The _f64 structs and functions hold double, the _f32 ones float (the run's precision); losses and other sums are
 * double in both. See sgd_step_impl.h for what each function computes. idx holds int64 row numbers (long on x86-64
 * Linux, the only target). */
#ifndef STUDENTSPEC_SGD_STEP_H
#define STUDENTSPEC_SGD_STEP_H

/* The training objectives (ensemble/losses.py names them; loss_and_grad in sgd_step_impl.h computes them), with
 * d = out - y per sample over the C outputs: half_sse = 1/2 sum_c d_c^2 (the paper's J), mse = mean_c d_c^2,
 * ce = cross-entropy to the argmax of y; each a mean over the batch. */
enum ss_objective { SS_HALF_SSE = 0, SS_MSE = 1, SS_CE = 2 };

/* The hidden layers' activation psi (ensemble/activations/ names them): ReLU max(z, 0), Leaky ReLU max(z, slope z);
 * the identity is Leaky ReLU at slope 1 (v > 0 ? v : 1.0 * v is v exactly). The top layer is linear. */
enum ss_activation { SS_ACT_RELU = 0, SS_ACT_LEAKY_RELU = 1 };

/* SS_MAX_LAYERS: weight matrices a net may have (a pass keeps one pointer per layer in a fixed array). */
enum ss_limits { SS_MAX_LAYERS = 63 };

/* An ensemble of S MLPs with L layers of widths[0..L]: W[l] [S, widths[l], widths[l + 1]] and bias[l]
 * [S, widths[l + 1]], row-major, seed axis first; layer l computes h_{l+1} = psi(h_l W_l + b_l), the top one
 * without psi. slope is Leaky ReLU's (ignored by ReLU). A step updates W and bias in place. */
struct ss_net_f64 {
    int S, L;
    const int *widths;
    double **W, **bias;
    enum ss_activation act;
    double slope;
    enum ss_objective obj;
};
struct ss_net_f32 {
    int S, L;
    const int *widths;
    float **W, **bias;
    enum ss_activation act;
    double slope;
    enum ss_objective obj;
};

/* A batch of B samples per seed: x and y hold `rows` rows per seed ([S, rows, widths[0]] and [S, rows, widths[L]];
 * rows = 0: B), read in place. With idx ([S, B] row numbers in [0, rows); [T, S, B] for ss_sgd_steps, which needs
 * them) seed s's batch is its rows idx[s, :], gathered in the kernel; without (NULL), its first B rows. */
struct ss_batch_f64 {
    int B;
    const double *x, *y;
    const long *idx;
    long rows;
};
struct ss_batch_f32 {
    int B;
    const float *x, *y;
    const long *idx;
    long rows;
};

/* What an evaluation pass writes: loss[s], sq[s] = sum (out - y)^2, each hidden layer l's activations into
 * hidden[l - 1] [S, B, widths[l]] (hidden NULL: nowhere), and gW[l] += gscale dLoss/dW_l, gb[l] += gscale dLoss/db_l
 * (gW NULL: no backward pass). */
struct ss_eval_f64 {
    double *loss, *sq;
    double **hidden, **gW, **gb;
    double gscale;
};
struct ss_eval_f32 {
    double *loss, *sq;
    float **hidden, **gW, **gb;
    double gscale;
};

/* The streaming correlation sums of ensemble/corr.py's CorrAccumulator between m teacher and n student nodes, per
 * seed: the shifts [S, m], [S, n] and the sums sum_t, sq_t [S, m], sum_s, sq_s [S, n], cross [S, m, n]. */
struct ss_corr {
    int m, n;
    const double *shift_t, *shift_s;
    double *sum_t, *sq_t, *sum_s, *sq_s, *cross;
};

/* Elements (of the run's precision) of workspace one thread of the step, the steps or the evaluation pass needs. */
long ss_workspace(int L, const int *widths, int B);

/* work: threads times the workspace above; alive[s] (NULL: every seed) selects the seeds that step. */
void ss_sgd_step_f64(const struct ss_net_f64 *net, const struct ss_batch_f64 *batch, double lr,
                     const unsigned char *alive, double *loss, double *work, int threads);
void ss_sgd_step_f32(const struct ss_net_f32 *net, const struct ss_batch_f32 *batch, double lr,
                     const unsigned char *alive, double *loss, float *work, int threads);

void ss_sgd_steps_f64(int T, const struct ss_net_f64 *net, const struct ss_batch_f64 *batch, double lr,
                      const unsigned char *alive, double *loss, double *work, int threads);
void ss_sgd_steps_f32(int T, const struct ss_net_f32 *net, const struct ss_batch_f32 *batch, double lr,
                      const unsigned char *alive, double *loss, float *work, int threads);

void ss_forward_grad_f64(const struct ss_net_f64 *net, const struct ss_batch_f64 *batch, const struct ss_eval_f64 *out,
                         double *work, int threads);
void ss_forward_grad_f32(const struct ss_net_f32 *net, const struct ss_batch_f32 *batch, const struct ss_eval_f32 *out,
                         float *work, int threads);

/* One chunk of B rows per seed: teacher t [B, m] at t + s * t_rows * m, student h [B, n] at h + s * h_rows * n
 * (REAL: the activations' precision); work: threads * B * (m + n) doubles. */
void ss_corr_update_f64(int S, int B, const double *t, long t_rows, const double *h, long h_rows,
                        const struct ss_corr *acc, double *work, int threads);
void ss_corr_update_f32(int S, int B, const float *t, long t_rows, const float *h, long h_rows,
                        const struct ss_corr *acc, double *work, int threads);

#endif
