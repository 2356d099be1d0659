/* Matrix products of the learner's linear layers that torch would send to MKL's AVX2 code.
 *
 * gemm: C = A·B for row-major A and B, e.g. a layer's input gradient ∂L/∂y · W.
 *
 * wgrad: weight gradients G = Dᵀ X, a sum of R outer products.
 *
 * D (R, N) holds ∂L/∂(layer output) and X (R, K) the layer's input, one row per sample and time
 * step; G (N, K) = Σ_r D[r]ᵀ X[r] is the weight's gradient and, on request, b (N) = Σ_r D[r] the
 * bias's. torch's mm sends this product to MKL, whose AVX2 code runs on AMD processors even where
 * they have AVX-512; both operands are row-major with R as their outer dimension, so oneDNN would
 * need both copied into transposed layouts first. Here the tiles of fma_gemm.h read them as they
 * are, through strides: as Gᵀ (K, N) += Xᵀ D (vectors along N) or as G += Dᵀ X (vectors along K),
 * whichever wastes fewer vector lanes on the masked last vector of columns.
 *
 * Each element is summed in two levels, Σ_chunks (Σ_{r in chunk} terms) over chunks of RC rows in
 * order, each inner sum with fused multiply-adds in row order. That keeps the rounding error near
 * that of a blocked library product (a plain running sum over thousands of rows loses several
 * times more), and a chunk of D's column panel stays in the L1 cache while all of X's columns
 * pass over it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "fma_gemm.h"

#define RC 128 /* rows per chunk */

/* Vector width in floats of fma_gemm.h's tiles here (0: only its portable loop). */
int vector_width(void) { return FG_VW; }

/* C (M, N) = A (M, P) · B (P, N) [+ bias (N)], rows lda, ldb, ldc floats apart; each element a
   fused multiply-add chain over p in order (fma_gemm.h), the bias (when not NULL) added last. */
void gemm(const float* a, int64_t lda, const float* b, int64_t ldb, const float* bias, float* c,
          int64_t ldc, int64_t M, int64_t N, int64_t P) {
  fma_gemm(a, lda, 1, b, ldb, c, ldc, bias, M, N, P, bias ? FG_ADD_BIAS : FG_STORE_SUM);
}

/* out (C, R) = aᵀ (fg_transpose in fma_gemm.h): the weights' transposes the tiles read as B. */
void transpose(const float* restrict a, int64_t R, int64_t C, int64_t lda, float* restrict out,
               int64_t ldo) {
  fg_transpose(a, R, C, lda, out, ldo);
}

/* Idle lanes in the masked last vector when a product is vectorised along n columns. */
static int64_t idle_lanes(int64_t n) {
#if FG_VW > 0
  return (FG_VW - n % FG_VW) % FG_VW;
#else
  (void)n;
  return 0;
#endif
}

/* G (N, K) = Σ_r D[r]ᵀ X[r] for D (R, N) with row stride ldd and X (R, K) with row stride ldx
   (floats; column slices of wider arrays are fine); when b != NULL also b (N) = Σ_r D[r], summed
   in the same two levels. G and b are written, not accumulated into.
   orient: 0 computes Gᵀ (K, N) = Xᵀ D, vectors along N, into a work buffer and transposes it;
   1 computes G = Dᵀ X directly, vectors along K; -1 picks the one with fewer idle lanes in
   masked last vectors (on a tie 1, which needs no transpose). Every element gets the same
   operations in the same order either way, so the choice changes the speed only (tested).
   b is the product of a row of ones with each chunk of D, computed right after the chunk's part
   of G while that chunk is in cache (as a separate pass after G, reading D from memory again,
   it took 23 of 288 µs for D (2496, 192); now ~14). Returns 0, or -1 when the work buffer
   could not be allocated (nothing written). */
int wgrad(const float* restrict d, int64_t ldd, const float* restrict x, int64_t ldx,
          float* restrict g, float* restrict b, int64_t R, int64_t N, int64_t K, int orient) {
  static const float one = 1.0f; /* b = 1ᵀ D: the tiles' chains fma(1, d, acc) = acc + d exactly */
  if (orient < 0) orient = idle_lanes(K) * N <= idle_lanes(N) * K ? 1 : 0; /* ties: no transpose */
  float* gt = NULL;
  if (orient == 1) {
    for (int64_t e = 0; e < N * K; ++e) g[e] = 0.0f;
  } else {
    gt = calloc((size_t)(K * N) + 1, sizeof(float));
    if (!gt) return -1;
  }
  if (b)
    for (int64_t n = 0; n < N; ++n) b[n] = 0.0f;
  for (int64_t c = 0; c < R; c += RC) {
    int64_t rows = R - c < RC ? R - c : RC;
    const float* dc = d + c * ldd;
    if (orient == 1)
      fma_gemm(dc, 1, ldd, x + c * ldx, ldx, g, K, NULL, N, K, rows, FG_ADD_TO_C);
    else
      fma_gemm(x + c * ldx, 1, ldx, dc, ldd, gt, N, NULL, K, N, rows, FG_ADD_TO_C);
    if (b) /* while the chunk of D is in cache (a second pass over D read it from memory) */
      fma_gemm(&one, 0, 0, dc, ldd, b, N, NULL, 1, N, rows, FG_ADD_TO_C);
  }
  if (gt) {
    fg_transpose(gt, K, N, N, g, K);
    free(gt);
  }
  return 0;
}
