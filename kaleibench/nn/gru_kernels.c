/* GRU arithmetic for kaleibench's learner: whole sequences in one call, gates for all M rows.
 *
 * gru_fwd_seq_in runs the recurrence: per step the products x_t W_ihᵀ and h_{t-1} W_hhᵀ
 * (fma_gemm.h) and the element-wise gate work of gru_fwd_step, biases included; gru_bwd_seq runs
 * BPTT the same way. Gate layout as torch.nn.GRU: rows (r, z, n) of width H.
 *
 *   r = sigmoid(gi_r + gh_r)        z = sigmoid(gi_z + gh_z)
 *   n = tanh(gi_n + r * gh_n)       h = n + z * (h_prev - n)
 *
 * exp is evaluated in float with a Cody-Waite range reduction and a degree-5 polynomial
 * (exp_poly.h, relative error about 1e-7) so that the compiler can vectorise the loops;
 * sigmoid(a) = 1 / (1 + exp(-a)) and tanh(a) = 2 sigmoid(2a) - 1.
 * Build flags (kaleibench/utils/native.py): -O3 -march=native -fno-trapping-math
 * -fno-math-errno -fopenmp-simd -ffp-contract=off; no -ffast-math, so every operation is an IEEE
 * float op, and every fused multiply-add is written out (fmaf here and in exp_poly.h, intrinsics
 * in fma_gemm.h): the compiler never fuses on its own, so results do not depend on it. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "exp_poly.h"
#include "fma_gemm.h"

/* exp(x) for x in [-87, 88] (clamped), finite float result. */
static inline float exp_f(float x) {
  float two_k;
  float em1 = expm1_reduced(x, &two_k);
  return (em1 + 1.0f) * two_k;
}

static inline float sigmoid_f(float a) { return 1.0f / (1.0f + exp_f(-a)); }
static inline float tanh_f(float a) { return 2.0f / (1.0f + exp_f(-2.0f * a)) - 1.0f; }

/* One GRU step for M rows: gi (M,3H) = W_ih x_t, gh (M,3H) = W_hh h_{t-1} (products without
   their biases), bi = b_ih and bh = b_hh (3H each), hp (M,H) = h_{t-1} -> hn (M,H) = h_t; when
   save != 0 also r, z, n and ghn = W_hn h + b_hn (each (M,H)), which the backward step needs.
   Each bias is added to its own product before anything else, (W x) + b, the value a matrix
   product with the bias as its initial output gives; adding it here spares copying the bias
   into every row of the output first. */
void gru_fwd_step(const float* restrict gi, const float* restrict gh, const float* restrict bi,
                  const float* restrict bh, const float* restrict hp, float* restrict hn,
                  float* restrict r_o, float* restrict z_o, float* restrict n_o,
                  float* restrict g_o, int64_t M, int64_t H, int save) {
  for (int64_t m = 0; m < M; ++m) {
    const float* ai = gi + m * 3 * H;
    const float* bb = gh + m * 3 * H;
    const float* p = hp + m * H;
    float* o = hn + m * H;
    if (save) {
      float* ro = r_o + m * H;
      float* zo = z_o + m * H;
      float* no = n_o + m * H;
      float* go = g_o + m * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        float r = sigmoid_f((ai[j] + bi[j]) + (bb[j] + bh[j]));
        float z = sigmoid_f((ai[H + j] + bi[H + j]) + (bb[H + j] + bh[H + j]));
        float ghn = bb[2 * H + j] + bh[2 * H + j];
        float n = tanh_f((ai[2 * H + j] + bi[2 * H + j]) + r * ghn);
        o[j] = fmaf(z, p[j] - n, n); /* n + z (h_prev - n), fused */
        ro[j] = r; zo[j] = z; no[j] = n; go[j] = ghn;
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        float r = sigmoid_f((ai[j] + bi[j]) + (bb[j] + bh[j]));
        float z = sigmoid_f((ai[H + j] + bi[H + j]) + (bb[H + j] + bh[H + j]));
        float n = tanh_f((ai[2 * H + j] + bi[2 * H + j]) + r * (bb[2 * H + j] + bh[2 * H + j]));
        o[j] = fmaf(z, p[j] - n, n); /* n + z (h_prev - n), fused */
      }
    }
  }
}

/* BPTT through one step. g (M,H) = the total dL/dh_t; hp = h_{t-1}; r, z, n, ghn = the step's
   saved gates and W_hn h_{t-1} + b_hn. Writes di (M,3H) = dL/d(W_ih x_t + b_ih) and
   dh (M,3H) = dL/d(W_hh h_{t-1} + b_hh), and adds the direct path g * z to gprev (M,H) =
   dL/dh_{t-1} (NULL at t = 0); the caller adds dh @ W_hh to gprev. With a = the gate's
   pre-activation: dn = g (1 - z), dz = g (h_{t-1} - n); da_n = dn (1 - n^2),
   da_z = dz z (1 - z), da_r = da_n ghn r (1 - r); d(gh_n) = r da_n. */
void gru_bwd_step(const float* restrict g, const float* restrict hp, const float* restrict r_,
                  const float* restrict z_, const float* restrict n_, const float* restrict ghn_,
                  float* restrict di, float* restrict dh, float* restrict gprev, int64_t M,
                  int64_t H) {
  for (int64_t m = 0; m < M; ++m) {
    const float* gg = g + m * H; const float* p = hp + m * H;
    const float* R = r_ + m * H; const float* Z = z_ + m * H; const float* N = n_ + m * H;
    const float* G = ghn_ + m * H;
    float* a = di + m * 3 * H; float* b = dh + m * 3 * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      float gj = gg[j], r = R[j], z = Z[j], n = N[j];
      float da_n = gj * (1.0f - z) * (1.0f - n * n);
      float da_z = gj * (p[j] - n) * z * (1.0f - z);
      float da_r = da_n * G[j] * r * (1.0f - r);
      a[j] = da_r; a[H + j] = da_z; a[2 * H + j] = da_n;
      b[j] = da_r; b[H + j] = da_z; b[2 * H + j] = da_n * r;
    }
    if (gprev) {
      float* q = gprev + m * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) q[j] += gg[j] * Z[j];
    }
  }
}

/* The whole forward pass in one call. x (T,M,I) is the input, wit (I,3H) = W_ihᵀ, wt (H,3H) =
   W_hhᵀ, bi = b_ih, bh = b_hh; hs (T+1,M,H) holds h_0 in hs[0] and receives h_1..h_T; gw and gh
   (M,3H each) are work space. Per step: gw = x_t W_ihᵀ and gh = h_{t-1} W_hhᵀ (fma_gemm.h: each
   element a fused multiply-add chain over k in order, so the same floats as one product over
   all T·M rows; computed step by step, the input projection's rows are still in cache for the
   gates instead of a (T,M,3H) array written first and read back), then gru_fwd_step. When
   save != 0 the gates of step t go to r, z, n, ghn + t·M·H (each (T,M,H)). A zero h_0 (an
   episode's start) skips the first recurrent product: its chains of zero terms sum to +0
   exactly (finite weights). */
void gru_fwd_seq_in(const float* restrict x, int64_t I, const float* restrict wit,
                    float* restrict gw, const float* restrict wt, const float* restrict bi,
                    const float* restrict bh, float* restrict hs, float* restrict gh,
                    float* restrict r_o, float* restrict z_o, float* restrict n_o,
                    float* restrict g_o, int64_t T, int64_t M, int64_t H, int save) {
  const int64_t blk = M * H;
  int zero_start = 1;
  for (int64_t e = 0; e < blk && zero_start; ++e) zero_start = hs[e] == 0.0f;
  for (int64_t t = 0; t < T; ++t) {
    fma_gemm(x + t * M * I, I, 1, wit, 3 * H, gw, 3 * H, NULL, M, 3 * H, I, FG_STORE_SUM);
    if (t == 0 && zero_start)
      for (int64_t e = 0; e < 3 * blk; ++e) gh[e] = 0.0f;
    else
      fma_gemm(hs + t * blk, H, 1, wt, 3 * H, gh, 3 * H, NULL, M, 3 * H, H, FG_STORE_SUM);
    if (save)
      gru_fwd_step(gw, gh, bi, bh, hs + t * blk, hs + (t + 1) * blk, r_o + t * blk,
                   z_o + t * blk, n_o + t * blk, g_o + t * blk, M, H, 1);
    else
      gru_fwd_step(gw, gh, bi, bh, hs + t * blk, hs + (t + 1) * blk, NULL, NULL, NULL, NULL, M,
                   H, 0);
  }
}

/* BPTT over the whole sequence in one call. g (T,M,H) holds ∂L/∂h_t from the outputs and is
   turned into the total ∂L/∂h_t, from t = T-1 down; hs, r, z, n, ghn as saved by gru_fwd_seq_in;
   w (3H,H) = W_hh. Writes di, dh (T,M,3H) as gru_bwd_step does, and for t > 0 adds to
   ∂L/∂h_{t-1} first the direct path g·z and then the product dh_t W_hh. */
void gru_bwd_seq(float* restrict g, const float* restrict hs, const float* restrict r_,
                 const float* restrict z_, const float* restrict n_, const float* restrict ghn_,
                 float* restrict di, float* restrict dh, const float* restrict w, int64_t T,
                 int64_t M, int64_t H) {
  const int64_t blk = M * H;
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t o = t * blk;
    gru_bwd_step(g + o, hs + o, r_ + o, z_ + o, n_ + o, ghn_ + o, di + 3 * o, dh + 3 * o,
                 t > 0 ? g + o - blk : NULL, M, H);
    if (t > 0)
      fma_gemm(dh + 3 * o, 3 * H, 1, w, H, g + o - blk, H, NULL, M, H, 3 * H, FG_ADD_TO_C);
  }
}

/* The GRU agent's whole unroll in one call: for T·M input rows x (T,M,I), time-major,

     y = ReLU(x W1ᵀ + b1) (T·M,H),  h_1..h_T = GRU(y) from h_0 = 0,  q = h W2ᵀ + b2 (T·M,A)

   with W1 (H,I), W_ih (3H,H), W_hh (3H,H), W2 (A,H) as stored (row-major; their transposes are
   made here, the B operands of fma_gemm) and the products of kaleibench.nn.products.linear
   (bias added last) and of gru_fwd_seq_in: the same operations as those calls, so the same
   floats. The ReLU keeps -0.0 and NaN as torch's clamp_min does. Writes y, hs (T+1,M,H) with
   hs[0] = 0, q and, when save != 0, the gates r, z, n, ghn (each (T,M,H)). Why one call: the
   same steps as ~10 torch and ctypes calls cost ~35 µs of dispatch per pass (AMD EPYC, family
   26). Returns 0, or -1 when its work space could not be allocated (nothing written). */
int gru_agent_fwd(const float* restrict x, const float* restrict w1, const float* restrict b1,
                  const float* restrict w_ih, const float* restrict w_hh,
                  const float* restrict b_ih, const float* restrict b_hh,
                  const float* restrict w2, const float* restrict b2, float* restrict y,
                  float* restrict hs, float* restrict q, float* restrict r_o,
                  float* restrict z_o, float* restrict n_o, float* restrict g_o, int64_t T,
                  int64_t M, int64_t I, int64_t H, int64_t A, int save) {
  const int64_t rows = T * M;
  /* W1ᵀ (I,H), W_ihᵀ (H,3H), W_hhᵀ (H,3H), W2ᵀ (H,A), then one step's two products (M,3H) */
  float* work = malloc(sizeof(float) * (size_t)(I * H + 6 * H * H + H * A + 6 * M * H + 1));
  if (!work) return -1;
  float* w1t = work;
  float* wit = w1t + I * H;
  float* wt = wit + 3 * H * H;
  float* w2t = wt + 3 * H * H;
  float* gw = w2t + H * A;
  float* gh = gw + 3 * M * H;
  for (int64_t e = 0; e < M * H; ++e) hs[e] = 0.0f;
  fg_transpose(w1, H, I, I, w1t, H);
  fg_transpose(w_ih, 3 * H, H, H, wit, 3 * H);
  fg_transpose(w_hh, 3 * H, H, H, wt, 3 * H);
  fg_transpose(w2, A, H, H, w2t, A);
  fma_gemm(x, I, 1, w1t, H, y, H, b1, rows, H, I, FG_ADD_BIAS);
  for (int64_t e = 0; e < rows * H; ++e) y[e] = y[e] < 0.0f ? 0.0f : y[e];
  gru_fwd_seq_in(y, H, wit, gw, wt, b_ih, b_hh, hs, gh, r_o, z_o, n_o, g_o, T, M, H, save);
  fma_gemm(hs + M * H, H, 1, w2t, A, q, A, b2, rows, A, H, FG_ADD_BIAS);
  free(work);
  return 0;
}

/* The backward pass of gru_agent_fwd (its saved x, y, hs and gates) from gq = ∂L/∂q (T·M,A):
   the calls of kaleibench.nn.native_agent's backward pass in one, so the same floats:

     ∂W2, ∂b2 = weight gradient of (gq, h);  ∂h = gq W2;  BPTT (gru_bwd_seq) -> ∂gi, ∂gh;
     ∂y = ∂gi W_ih;  ∂W_ih, ∂b_ih = (∂gi, y);  ∂W_hh, ∂b_hh = (∂gh, h_{t-1});
     ∂a = ∂y where y > 0 (torch's threshold_backward: 0 where y <= 0);  ∂W1, ∂b1 = (∂a, x)

   (weight gradients by fg_wgrad, with their biases' sums). Writes the eight gradients, shaped as
   their parameters. Returns 0, or -1 when its work space could not be allocated. */
int gru_agent_bwd(const float* restrict gq, const float* restrict x, const float* restrict y,
                  const float* restrict hs, const float* restrict r_, const float* restrict z_,
                  const float* restrict n_, const float* restrict ghn_,
                  const float* restrict w_ih, const float* restrict w_hh,
                  const float* restrict w2, float* g_w1, float* g_b1, float* g_wih,
                  float* g_whh, float* g_bih, float* g_bhh, float* g_w2, float* g_b2, int64_t T,
                  int64_t M, int64_t I, int64_t H, int64_t A) {
  const int64_t rows = T * M;
  /* ∂h (T·M,H), ∂gi and ∂gh (T·M,3H), ∂y (T·M,H) */
  float* work = malloc(sizeof(float) * (size_t)(rows * 8 * H + 1));
  if (!work) return -1;
  float* g = work;
  float* d_gi = g + rows * H;
  float* d_gh = d_gi + rows * 3 * H;
  float* d_y = d_gh + rows * 3 * H;
  int status = fg_wgrad(gq, A, hs + M * H, H, g_w2, g_b2, rows, A, H, -1);
  fma_gemm(gq, A, 1, w2, H, g, H, NULL, rows, H, A, FG_STORE_SUM);
  gru_bwd_seq(g, hs, r_, z_, n_, ghn_, d_gi, d_gh, w_hh, T, M, H);
  fma_gemm(d_gi, 3 * H, 1, w_ih, H, d_y, H, NULL, rows, H, 3 * H, FG_STORE_SUM);
  status |= fg_wgrad(d_gi, 3 * H, y, H, g_wih, g_bih, rows, 3 * H, H, -1);
  status |= fg_wgrad(d_gh, 3 * H, hs, H, g_whh, g_bhh, rows, 3 * H, H, -1);
  for (int64_t e = 0; e < rows * H; ++e) d_y[e] = y[e] <= 0.0f ? 0.0f : d_y[e];
  status |= fg_wgrad(d_y, H, x, I, g_w1, g_b1, rows, H, I, -1);
  free(work);
  return status ? -1 : 0;
}
