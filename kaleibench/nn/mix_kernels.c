/* QMIX's mixing step for kaleibench's learner: the per-row arithmetic after the hypernetworks.
 *
 * For each of M rows, with the hypernetworks' raw outputs w1 (N·E), b1 (E), wf (E) and v:
 *
 *   a_e = Σ_i q_i |w1_ie| + b1_e            hidden_e = ELU(a_e)
 *   Q_tot = Σ_e hidden_e |wf_e| + v
 *
 * torch spreads this (and its backward pass) over ~15 calls of a few microseconds each on
 * tensors of a few thousand floats; here it is one call. Every sum has an order fixed by the
 * source: over agents in index order, over the E mixing units by sum8 (eight running sums, then
 * combined pairwise), so the result does not depend on the vector width or the compiler.
 * ELU(a) = a for a > 0 and expm1(a) otherwise, with expm1 from the same range reduction and
 * polynomial as the GRU's exp (exp_poly.h), accurate near 0.
 * Build flags as gru_kernels.c (kaleibench/utils/native.py): plain IEEE float arithmetic. */
#include <stddef.h>
#include <stdint.h>

#include "exp_poly.h"

/* expm1(x) for x <= 88 (clamped below at -87, where it is -1 in float anyway). */
static inline float expm1_f(float x) {
  float two_k;
  float em1 = expm1_reduced(x, &two_k);
  return two_k * em1 + (two_k - 1.0f);
}

/* x_0 + ... + x_{E-1} as eight strided running sums (x_k, x_{k+8}, ...) combined pairwise:
   a fixed order that a compiler can still run as one 8-lane vector add per 8 elements. */
static inline float sum8(const float* restrict x, int64_t E) {
  float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  int64_t e = 0;
  for (; e + 8 <= E; e += 8)
    for (int k = 0; k < 8; ++k) acc[k] += x[e + k];
  for (int k = 0; e < E; ++e, ++k) acc[k] += x[e];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static inline float absf(float x) { return x < 0.0f ? -x : x; }
static inline float sgnf(float x) { return (float)((x > 0.0f) - (x < 0.0f)); } /* torch.sgn */

/* Forward for M rows. Row m of each input starts at m * ld<name>: w1 (N·E, agent-major),
   b1 (E), wf (E), v (1); q (M, N) contiguous. Writes y (M); when a_o is not NULL also the
   pre-activations a (M, E), which the backward pass needs. */
void qmix_mix_fwd(const float* restrict q, const float* restrict w1, int64_t ldw1,
                  const float* restrict b1, int64_t ldb1, const float* restrict wf, int64_t ldwf,
                  const float* restrict v, int64_t ldv, float* restrict y, float* restrict a_o,
                  int64_t M, int64_t N, int64_t E) {
  float a[1024]; /* E <= 1024, checked by the caller */
  for (int64_t m = 0; m < M; ++m) {
    const float* qm = q + m * N;
    const float* w = w1 + m * ldw1;
    const float* b = b1 + m * ldb1;
    const float* f = wf + m * ldwf;
    for (int64_t e = 0; e < E; ++e) a[e] = qm[0] * absf(w[e]);
    for (int64_t i = 1; i < N; ++i) {
      const float qi = qm[i];
      const float* wi = w + i * E;
      for (int64_t e = 0; e < E; ++e) a[e] += qi * absf(wi[e]);
    }
    for (int64_t e = 0; e < E; ++e) a[e] += b[e];
    if (a_o) {
      float* ao = a_o + m * E;
      for (int64_t e = 0; e < E; ++e) ao[e] = a[e];
    }
    for (int64_t e = 0; e < E; ++e) a[e] = (a[e] > 0.0f ? a[e] : expm1_f(a[e])) * absf(f[e]);
    y[m] = sum8(a, E) + v[m * ldv];
  }
}

/* Backward for M rows, given gy (M) = dL/dQ_tot and the forward's inputs and saved a (M, E).
   Writes dw1 (M, N·E) = dL/dw1 (raw, before |.|), db1 (row stride lddb1) = dL/db1 = dL/da,
   dwf (M, E) = dL/dwf (raw) and dq (M, N). dL/dv = gy. ELU'(a) = 1 for a > 0, exp(a) =
   expm1(a) + 1 otherwise; |x|' = sgn(x) (0 at 0, as torch). */
void qmix_mix_bwd(const float* restrict gy, const float* restrict q, const float* restrict w1,
                  int64_t ldw1, const float* restrict wf, int64_t ldwf, const float* restrict a_s,
                  float* restrict dw1, float* restrict db1, int64_t lddb1, float* restrict dwf,
                  float* restrict dq, int64_t M, int64_t N, int64_t E) {
  float da[1024], t[1024];
  for (int64_t m = 0; m < M; ++m) {
    const float g = gy[m];
    const float* qm = q + m * N;
    const float* w = w1 + m * ldw1;
    const float* f = wf + m * ldwf;
    const float* a = a_s + m * E;
    float* dfm = dwf + m * E;
    float* dbm = db1 + m * lddb1;
    for (int64_t e = 0; e < E; ++e) {
      const float ae = a[e];
      const float em1 = expm1_f(ae);
      const float hidden = ae > 0.0f ? ae : em1;
      dfm[e] = g * hidden * sgnf(f[e]);
      const float dh = g * absf(f[e]);
      da[e] = ae > 0.0f ? dh : dh * (em1 + 1.0f);
      dbm[e] = da[e];
    }
    for (int64_t i = 0; i < N; ++i) {
      const float qi = qm[i];
      const float* wi = w + i * E;
      float* dwi = dw1 + m * N * E + i * E;
      for (int64_t e = 0; e < E; ++e) {
        dwi[e] = qi * da[e] * sgnf(wi[e]);
        t[e] = absf(wi[e]) * da[e];
      }
      dq[m * N + i] = sum8(t, E);
    }
  }
}

/* The ReLU's backward pass into a strided output: out = g where pre > 0, else 0 (M rows of K;
   row m of pre, g and out start at m * ldp, m * ldg, m * ldo). */
void relu_grad(const float* restrict pre, int64_t ldp, const float* restrict g, int64_t ldg,
               float* restrict out, int64_t ldo, int64_t M, int64_t K) {
  for (int64_t m = 0; m < M; ++m) {
    const float* p = pre + m * ldp;
    const float* gg = g + m * ldg;
    float* o = out + m * ldo;
    for (int64_t k = 0; k < K; ++k) o[k] = p[k] > 0.0f ? gg[k] : 0.0f;
  }
}
