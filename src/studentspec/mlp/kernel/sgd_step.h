/* The compiled step's exported functions, declared once: sgd_step.c #includes this header (so the
 * C compiler checks each definition against it) and the Python binding (__init__.py) feeds the
 * same text, less its preprocessor lines, to cffi's ffi.cdef (so every call from Python is checked
 * for argument count and types). Plain C declarations only: no macros, no #include.
 * REAL is double in the _f64 functions and float in the _f32 ones; see sgd_step_impl.h for what
 * each computes. idx holds int64 row numbers (long on x86-64 Linux, the only target). */
#ifndef STUDENTSPEC_SGD_STEP_H
#define STUDENTSPEC_SGD_STEP_H

/* Elements (of the run's precision) of workspace one thread of ss_sgd_step / ss_forward_grad needs. */
long ss_workspace(int L, const int *widths, int B);

void ss_sgd_step_f64(int S, int L, const int *widths, int B, const double *x, const double *y, const long *idx,
                     long n_rows, double **W, double **bias, int act, double slope, int obj, double lr,
                     const unsigned char *alive, double *loss, double *work, int threads);
void ss_sgd_step_f32(int S, int L, const int *widths, int B, const float *x, const float *y, const long *idx,
                     long n_rows, float **W, float **bias, int act, double slope, int obj, double lr,
                     const unsigned char *alive, double *loss, float *work, int threads);

void ss_sgd_steps_f64(int T, int S, int L, const int *widths, int B, const double *x, const double *y, const long *idx,
                      long n_rows, double **W, double **bias, int act, double slope, int obj, double lr,
                      const unsigned char *alive, double *loss, double *work, int threads);
void ss_sgd_steps_f32(int T, int S, int L, const int *widths, int B, const float *x, const float *y, const long *idx,
                      long n_rows, float **W, float **bias, int act, double slope, int obj, double lr,
                      const unsigned char *alive, double *loss, float *work, int threads);

void ss_forward_grad_f64(int S, int L, const int *widths, int B, const double *x, const double *y, long seed_rows,
                         double **W, double **bias, int act, double slope, int obj, double **hidden, double *loss,
                         double *sq, double **gW, double **gb, double gscale, double *work, int threads);
void ss_forward_grad_f32(int S, int L, const int *widths, int B, const float *x, const float *y, long seed_rows,
                         float **W, float **bias, int act, double slope, int obj, float **hidden, double *loss,
                         double *sq, float **gW, float **gb, double gscale, float *work, int threads);

/* Streaming correlation sums of one chunk (see sgd_step_impl.h); REAL is the activations' precision, sums are double. */
void ss_corr_update_f64(int S, int B, int m, int n, const double *t, long t_rows, const double *h, long h_rows,
                        const double *shift_t, const double *shift_s, double *sum_t, double *sq_t, double *sum_s,
                        double *sq_s, double *cross, double *work, int threads);
void ss_corr_update_f32(int S, int B, int m, int n, const float *t, long t_rows, const float *h, long h_rows,
                        const double *shift_t, const double *shift_s, double *sum_t, double *sq_t, double *sum_s,
                        double *sq_s, double *cross, double *work, int threads);

#endif
