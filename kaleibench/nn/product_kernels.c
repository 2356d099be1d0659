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
 * Each element is summed in two levels, Σ_chunks (Σ_{r in chunk} terms) over chunks of 128 rows
 * (FG_RC) in order, each inner sum with fused multiply-adds in row order. That keeps the
 * rounding error near that of a blocked library product (a plain running sum over thousands of
 * rows loses several times more), and a chunk of D's column panel stays in the L1 cache while
 * all of X's columns pass over it. The code is fg_wgrad in fma_gemm.h, shared with the agent's
 * and the mixer's kernels. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "fma_gemm.h"

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

/* G (N, K) = Dᵀ X and b (N) = Σ_r D[r] (fg_wgrad in fma_gemm.h: two-level sums, chunks of
   FG_RC rows; orient 0/1 chooses the loop order, -1 the one with fewer idle lanes). Returns 0,
   or -1 when the work buffer could not be allocated (nothing written). */
int wgrad(const float* restrict d, int64_t ldd, const float* restrict x, int64_t ldx,
          float* restrict g, float* restrict b, int64_t R, int64_t N, int64_t K, int orient) {
  return fg_wgrad(d, ldd, x, ldx, g, b, R, N, K, orient);
}
