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
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "exp_poly.h"
#include "fma_gemm.h"

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

/* QMIX's hypernetworks for M states s (M, S), rows lds floats apart, in one call:

     pre = s [W_c1; W_c2; W_c3; W_c4]ᵀ + [b_c1; …; b_c4]     (M, K + E), K = H1 + H2 + H3
     [h1 | h2 | h3] = ReLU(pre[:, :K])                        (in place: pre's first K columns)
     w1 = h1 W_w1ᵀ + c_w1 (M, NE),  wf = h2 W_wfᵀ + c_wf (M, E),  v = h3 W_vᵀ + c_v (M, 1)

   with the first layers' weights wc[i] (widths[i], S) and biases bc[i] (widths = H1, H2, H3, E),
   the second layers' weights (NE, H1), (E, H2), (1, H3), all contiguous. The products are
   fma_gemm's, with the weights' transposes as B and the bias added last: the operations of
   kaleibench.nn.products.linear and linear_stacked, so the same floats; the ReLU keeps -0.0 and
   NaN as torch's clamp_min does. Outputs go to pre, w1, wf, v (row strides ldpre, ldw1, ldwf,
   ldv; column slices of a wider array are fine). With absolute != 0, w1 and wf are stored as
   |w1| and |wf| (fabsf, torch's abs) and pre's last E columns (b1) are also copied to b1 (ldb1):
   the target mixer's packed weights. Why one call: as torch calls, these ~12 steps spent ~0.1 ms
   per update in dispatch and copies for ~0.12 ms of products (AMD EPYC, family 26). Returns 0,
   or -1 when the scratch for the transposed weights could not be allocated (nothing written). */
int qmix_hyper(const float* restrict s, int64_t lds, int64_t M, int64_t S,
               const float* wc1, const float* wc2, const float* wc3, const float* wc4,
               const float* bc1, const float* bc2, const float* bc3, const float* bc4,
               int64_t H1, int64_t H2, int64_t H3, int64_t E, const float* w_w1,
               const float* c_w1, const float* w_wf, const float* c_wf, const float* w_v,
               const float* c_v, int64_t NE, float* pre, int64_t ldpre, float* w1, int64_t ldw1,
               float* wf, int64_t ldwf, float* v, int64_t ldv, float* b1, int64_t ldb1,
               int absolute) {
  const int64_t K = H1 + H2 + H3, W = K + E;
  const float* wc[4] = {wc1, wc2, wc3, wc4};
  const float* bc[4] = {bc1, bc2, bc3, bc4};
  const int64_t widths[4] = {H1, H2, H3, E};
  /* scratch: [W_c1; …]ᵀ (S, W), the biases side by side (W), W_w1ᵀ (H1, NE), W_wfᵀ (H2, E),
     W_vᵀ (H3, 1) */
  float* scratch = malloc(sizeof(float) * (size_t)(S * W + W + H1 * NE + H2 * E + H3 + 1));
  if (!scratch) return -1;
  float* wct = scratch;
  float* bcat = wct + S * W;
  float* w1t = bcat + W;
  float* wft = w1t + H1 * NE;
  float* vt = wft + H2 * E;
  for (int64_t i = 0, col = 0; i < 4; col += widths[i], ++i) {
    fg_transpose(wc[i], widths[i], S, S, wct + col, W);
    for (int64_t j = 0; j < widths[i]; ++j) bcat[col + j] = bc[i][j];
  }
  fg_transpose(w_w1, NE, H1, H1, w1t, NE);
  fg_transpose(w_wf, E, H2, H2, wft, E);
  fg_transpose(w_v, 1, H3, H3, vt, 1);
  fma_gemm(s, lds, 1, wct, W, pre, ldpre, bcat, M, W, S, FG_ADD_BIAS);
  for (int64_t m = 0; m < M; ++m) {
    float* p = pre + m * ldpre;
    for (int64_t k = 0; k < K; ++k) p[k] = p[k] < 0.0f ? 0.0f : p[k];
  }
  fma_gemm(pre, ldpre, 1, w1t, NE, w1, ldw1, c_w1, M, NE, H1, FG_ADD_BIAS);
  fma_gemm(pre + H1, ldpre, 1, wft, E, wf, ldwf, c_wf, M, E, H2, FG_ADD_BIAS);
  fma_gemm(pre + H1 + H2, ldpre, 1, vt, 1, v, ldv, c_v, M, 1, H3, FG_ADD_BIAS);
  free(scratch);
  if (absolute) {
    for (int64_t m = 0; m < M; ++m) {
      float* a = w1 + m * ldw1;
      float* f = wf + m * ldwf;
      const float* bsrc = pre + m * ldpre + K;
      float* bdst = b1 + m * ldb1;
      for (int64_t j = 0; j < NE; ++j) a[j] = fabsf(a[j]);
      for (int64_t j = 0; j < E; ++j) f[j] = fabsf(f[j]);
      for (int64_t j = 0; j < E; ++j) bdst[j] = bsrc[j];
    }
  }
  return 0;
}

/* The mixer's whole backward pass for M rows in one call (the calls of native_mix.backward in
   its order, so the same floats): from gy (M) = ∂L/∂Q_tot and the forward pass's q (M, N), s
   (M, S; rows lds apart), pre (M, K + E; the ReLUs applied to its first K columns), w1 (M, N·E),
   wf (M, E), a (M, E) and the second layers' weights W_w1 (N·E, H1), W_wf (E, H2), W_v (1, H3):

     qmix_mix_bwd -> ∂w1, ∂b1, ∂wf, ∂q;  ∂v = gy
     ∂h = [∂w1 W_w1 | ∂wf W_wf | ∂v W_v],  ∂pre = [∂h where pre > 0 | ∂b1]
     the weight and bias gradients: ∂preᵀ s (the four state-reading layers, stacked), ∂w1ᵀ h1,
     ∂wfᵀ h2, ∂vᵀ h3 (fg_wgrad, each with its bias's sum)

   Writes dq (M, N), g_first (K + E, S), b_first (K + E), g_w1 (N·E, H1), gb_w1 (N·E), g_wf
   (E, H2), gb_wf (E), g_v (1, H3), gb_v (1). Returns 0, or -1 when its work arrays could not be
   allocated (nothing written). */
int qmix_hyper_bwd(const float* restrict gy, const float* restrict q, const float* restrict s,
                   int64_t lds, const float* restrict pre, const float* restrict w1,
                   const float* restrict wf, const float* restrict a, const float* restrict w_w1,
                   const float* restrict w_wf, const float* restrict w_v, int64_t M, int64_t N,
                   int64_t S, int64_t H1, int64_t H2, int64_t H3, int64_t E, float* restrict dq,
                   float* g_first, float* b_first, float* g_w1, float* gb_w1, float* g_wf,
                   float* gb_wf, float* g_v, float* gb_v) {
  const int64_t K = H1 + H2 + H3, W = K + E, NE = N * E;
  float* work = malloc(sizeof(float) * (size_t)(M * (W + NE + E + K) + 1));
  if (!work) return -1;
  float* d_pre = work;         /* (M, W) */
  float* d_w1 = d_pre + M * W; /* (M, NE) */
  float* d_wf = d_w1 + M * NE; /* (M, E) */
  float* d_h = d_wf + M * E;   /* (M, K) */
  int status = 0;
  qmix_mix_bwd(gy, q, w1, NE, wf, E, a, d_w1, d_pre + K, W, d_wf, dq, M, N, E);
  fma_gemm(d_w1, NE, 1, w_w1, H1, d_h, K, NULL, M, H1, NE, FG_STORE_SUM);
  fma_gemm(d_wf, E, 1, w_wf, H2, d_h + H1, K, NULL, M, H2, E, FG_STORE_SUM);
  fma_gemm(gy, 1, 1, w_v, H3, d_h + H1 + H2, K, NULL, M, H3, 1, FG_STORE_SUM);
  relu_grad(pre, W, d_h, K, d_pre, W, M, K);
  status |= fg_wgrad(d_pre, W, s, lds, g_first, b_first, M, W, S, -1);
  status |= fg_wgrad(d_w1, NE, pre, W, g_w1, gb_w1, M, NE, H1, -1);
  status |= fg_wgrad(d_wf, E, pre + H1, W, g_wf, gb_wf, M, E, H2, -1);
  status |= fg_wgrad(gy, 1, pre + H1 + H2, W, g_v, gb_v, M, 1, H3, -1);
  free(work);
  return status ? -1 : 0;
}
