/* A small float32 matrix product for the learner's kernels: C (=|+=) A·B, every element summed
 * over the reduction index p = 0, 1, ... in that order with one fused multiply-add per term.
 *
 * A fused multiply-add is one correctly rounded operation, so an element's value depends only on
 * its terms and their order: the vector tiles (AVX-512: 6 rows × 64 columns; AVX2 with FMA:
 * 6 × 16; the columns that do not fill a vector in one masked vector) and the portable loop
 * (other CPUs) give the same floats.
 *
 * A is read through two strides, a_row between output rows and a_red along the reduction, so the
 * same code reads A (M, P) row-major (a_row = lda, a_red = 1) and a transposed Aᵀ without a copy
 * (a_row = 1, a_red = lda). B (P, N) is row-major with row stride ldb; C (M, N) has row stride
 * ldc. A tile keeps its 6 × NV vector accumulators in registers: per p it loads NV vectors of B's
 * row and broadcasts 6 elements of A. */
#ifndef KALEIBENCH_FMA_GEMM_H
#define KALEIBENCH_FMA_GEMM_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__AVX512F__)
#include <immintrin.h>
typedef __m512 fg_vf;
#define FG_VW 16
#define FG_NV 4
#define FG_ZERO() _mm512_setzero_ps()
#define FG_LOAD(p) _mm512_loadu_ps(p)
#define FG_STORE(p, v) _mm512_storeu_ps(p, v)
#define FG_SET1(x) _mm512_set1_ps(x)
#define FG_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define FG_ADD(a, b) _mm512_add_ps(a, b)
typedef __mmask16 fg_mask;
#define FG_MASK(n) ((__mmask16)((1u << (n)) - 1u)) /* the first n < 16 lanes */
#define FG_MLOAD(m, p) _mm512_maskz_loadu_ps(m, p)
#define FG_MSTORE(m, p, v) _mm512_mask_storeu_ps(p, m, v)
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
typedef __m256 fg_vf;
#define FG_VW 8
#define FG_NV 2
#define FG_ZERO() _mm256_setzero_ps()
#define FG_LOAD(p) _mm256_loadu_ps(p)
#define FG_STORE(p, v) _mm256_storeu_ps(p, v)
#define FG_SET1(x) _mm256_set1_ps(x)
#define FG_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define FG_ADD(a, b) _mm256_add_ps(a, b)
typedef __m256i fg_mask;
#define FG_MASK(n) /* the first n < 8 lanes */ \
  _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define FG_MLOAD(m, p) _mm256_maskload_ps(p, m)
#define FG_MSTORE(m, p, v) _mm256_maskstore_ps(p, m, v)
#else
#define FG_VW 0
#endif
#define FG_MT 6 /* output rows per tile */
#define FG_STORE_SUM 0 /* C = Σ */
#define FG_ADD_TO_C 1  /* C = C + Σ */
#define FG_ADD_BIAS 2  /* C = Σ + bias (one bias per column) */

#if FG_VW > 0
/* C[0 : mt, 0 : nv·VW] (=|+=) Σ_{p < P} A[i, p] B[p, ·] (+ bias) for compile-time mt ≤ 6,
   nv ≤ NV and mode. With tail != 0 the tile is one vector wide (nv = 1) and only the lanes of
   ``mask`` are read and written: the columns left over after the full vectors. Masked-off lanes
   load zeros and are never stored, so every stored element is the same chain as elsewhere. */
static inline __attribute__((always_inline)) void fg_tile(
    const float* a, int64_t a_row, int64_t a_red, const float* b, int64_t ldb, int64_t P,
    float* c, int64_t ldc, const float* bias, const int mt, const int nv, const int mode,
    const int tail, fg_mask mask) {
  fg_vf acc[FG_MT][FG_NV];
#pragma GCC unroll 8
  for (int i = 0; i < FG_MT; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < FG_NV; ++v) acc[i][v] = FG_ZERO();
  for (int64_t p = 0; p < P; ++p) {
    fg_vf bv[FG_NV];
    const float* bp = b + p * ldb;
    const float* ap = a + p * a_red;
#pragma GCC unroll 8
    for (int v = 0; v < FG_NV; ++v)
      if (v < nv) bv[v] = tail ? FG_MLOAD(mask, bp) : FG_LOAD(bp + v * FG_VW);
#pragma GCC unroll 8
    for (int i = 0; i < FG_MT; ++i)
      if (i < mt) {
        fg_vf ab = FG_SET1(ap[i * a_row]);
#pragma GCC unroll 8
        for (int v = 0; v < FG_NV; ++v)
          if (v < nv) acc[i][v] = FG_FMA(ab, bv[v], acc[i][v]);
      }
  }
#pragma GCC unroll 8
  for (int i = 0; i < FG_MT; ++i)
    if (i < mt)
#pragma GCC unroll 8
      for (int v = 0; v < FG_NV; ++v)
        if (v < nv) {
          float* cp = c + i * ldc + v * FG_VW;
          fg_vf out = acc[i][v];
          if (mode == FG_ADD_TO_C)
            out = FG_ADD(tail ? FG_MLOAD(mask, cp) : FG_LOAD(cp), out);
          else if (mode == FG_ADD_BIAS)
            out = FG_ADD(out, tail ? FG_MLOAD(mask, bias) : FG_LOAD(bias + v * FG_VW));
          if (tail)
            FG_MSTORE(mask, cp, out);
          else
            FG_STORE(cp, out);
        }
}

/* All M rows of one panel of nv vectors of columns, for compile-time nv, mode and tail. */
static inline __attribute__((always_inline)) void fg_panel(
    const float* a, int64_t a_row, int64_t a_red, const float* b, int64_t ldb, int64_t P,
    float* c, int64_t ldc, const float* bias, int64_t M, const int nv, const int mode,
    const int tail, fg_mask mask) {
  int64_t m = 0;
  for (; m + FG_MT <= M; m += FG_MT)
    fg_tile(a + m * a_row, a_row, a_red, b, ldb, P, c + m * ldc, ldc, bias, FG_MT, nv, mode,
            tail, mask);
  const float* at = a + m * a_row;
  float* ct = c + m * ldc;
  switch (M - m) {
    case 1: fg_tile(at, a_row, a_red, b, ldb, P, ct, ldc, bias, 1, nv, mode, tail, mask); break;
    case 2: fg_tile(at, a_row, a_red, b, ldb, P, ct, ldc, bias, 2, nv, mode, tail, mask); break;
    case 3: fg_tile(at, a_row, a_red, b, ldb, P, ct, ldc, bias, 3, nv, mode, tail, mask); break;
    case 4: fg_tile(at, a_row, a_red, b, ldb, P, ct, ldc, bias, 4, nv, mode, tail, mask); break;
    case 5: fg_tile(at, a_row, a_red, b, ldb, P, ct, ldc, bias, 5, nv, mode, tail, mask); break;
    default: break;
  }
}

/* fg_panels_MODE: the columns 0 .. N-1 in panels of NV vectors, then the remaining full vectors,
   then the last n_tail (< VW) columns as one masked vector. */
#define FG_PANELS(MODE)                                                                      \
  static void fg_panels_##MODE(const float* a, int64_t a_row, int64_t a_red, const float* b,  \
                               int64_t ldb, int64_t P, float* c, int64_t ldc,                \
                               const float* bias, int64_t M, int64_t N) {                   \
    const int64_t n_vectors = N / FG_VW, n_tail = N % FG_VW;                                 \
    const fg_mask none = FG_MASK(0); /* read by tail tiles only */                            \
    int64_t v0 = 0;                                                                          \
    for (; v0 + FG_NV <= n_vectors; v0 += FG_NV)                                             \
      fg_panel(a, a_row, a_red, b + v0 * FG_VW, ldb, P, c + v0 * FG_VW, ldc,                 \
               bias ? bias + v0 * FG_VW : bias, M, FG_NV, MODE, 0, none);                     \
    const float* bt = b + v0 * FG_VW;                                                        \
    const float* biast = bias ? bias + v0 * FG_VW : bias; /* NULL stays NULL */              \
    float* ct = c + v0 * FG_VW;                                                              \
    switch (n_vectors - v0) {                                                                \
      case 1: fg_panel(a, a_row, a_red, bt, ldb, P, ct, ldc, biast, M, 1, MODE, 0, none); break;\
      case 2: fg_panel(a, a_row, a_red, bt, ldb, P, ct, ldc, biast, M, 2, MODE, 0, none); break;\
      case 3: fg_panel(a, a_row, a_red, bt, ldb, P, ct, ldc, biast, M, 3, MODE, 0, none); break;\
      default: break;                                                                        \
    }                                                                                        \
    if (n_tail > 0) {                                                                        \
      const int64_t n0 = n_vectors * FG_VW;                                                  \
      fg_panel(a, a_row, a_red, b + n0, ldb, P, c + n0, ldc, bias ? bias + n0 : bias, M, 1,  \
               MODE, 1, FG_MASK(n_tail));                                                    \
    }                                                                                        \
  }
FG_PANELS(0)
FG_PANELS(1)
FG_PANELS(2)
#endif

#if FG_VW == 0
/* Stores one result by mode (see fma_gemm). */
static inline void fg_put(float* ci, float acc, const float* bias, int64_t n, int mode) {
  *ci = mode == FG_ADD_TO_C ? *ci + acc : (mode == FG_ADD_BIAS ? acc + bias[n] : acc);
}

#define FG_LR 16 /* rows per block */
/* The portable loop, for CPUs without the vector tiles: columns n0 .. N-1, FG_LR rows at a
   time, A's block copied as Aᵀ (P, FG_LR) so that the rows' chains run side by side in vector
   lanes; each element the same chain of fused multiply-adds over p in order as in a tile. The
   plain loop, one element at a time, if that copy cannot be allocated. */
static void fg_portable(const float* a, int64_t a_row, int64_t a_red, const float* b,
                        int64_t ldb, float* c, int64_t ldc, const float* bias, int64_t M,
                        int64_t n0, int64_t N, int64_t P, int mode) {
  float* at = malloc((size_t)(P > 0 ? P : 1) * FG_LR * sizeof(float));
  if (!at) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t n = n0; n < N; ++n) {
        float acc = 0.0f;
        for (int64_t p = 0; p < P; ++p) acc = fmaf(a[i * a_row + p * a_red], b[p * ldb + n], acc);
        fg_put(c + i * ldc + n, acc, bias, n, mode);
      }
    return;
  }
  float acc[FG_LR][FG_LR]; /* [column][row] */
  for (int64_t j0 = n0; j0 < N; j0 += FG_LR) { /* up to FG_LR columns side by side */
    const int64_t cols = N - j0 < FG_LR ? N - j0 : FG_LR;
    for (int64_t i0 = 0; i0 < M; i0 += FG_LR) {
      const int64_t rows = M - i0 < FG_LR ? M - i0 : FG_LR;
      for (int64_t p = 0; p < P; ++p)
        for (int64_t l = 0; l < FG_LR; ++l)
          at[p * FG_LR + l] = l < rows ? a[(i0 + l) * a_row + p * a_red] : 0.0f;
      for (int64_t j = 0; j < cols; ++j)
        for (int64_t l = 0; l < FG_LR; ++l) acc[j][l] = 0.0f;
      for (int64_t p = 0; p < P; ++p) {
        const float* ap = at + p * FG_LR;
        const float* bp = b + p * ldb + j0;
        for (int64_t j = 0; j < cols; ++j) { /* independent chains: no wait on one sum */
          const float bv = bp[j];
#pragma omp simd
          for (int64_t l = 0; l < FG_LR; ++l) acc[j][l] = fmaf(ap[l], bv, acc[j][l]);
        }
      }
      for (int64_t l = 0; l < rows; ++l)
        for (int64_t j = 0; j < cols; ++j)
          fg_put(c + (i0 + l) * ldc + j0 + j, acc[j][l], bias, j0 + j, mode);
    }
  }
  free(at);
}
#endif

/* C (M, N) = A·B, and by mode (FG_STORE_SUM, FG_ADD_TO_C, FG_ADD_BIAS): C = Σ, C = C + Σ or
   C = Σ + bias[n], where Σ = Σ_p A[i, p] B[p, n] is summed first; A (M, P) through strides
   a_row, a_red; B (P, N) with row stride ldb; C with row stride ldc; bias (N) is read only in
   FG_ADD_BIAS mode. */
static void fma_gemm(const float* a, int64_t a_row, int64_t a_red, const float* b, int64_t ldb,
                     float* c, int64_t ldc, const float* bias, int64_t M, int64_t N, int64_t P,
                     int mode) {
#if FG_VW > 0
  if (mode == FG_ADD_TO_C)
    fg_panels_1(a, a_row, a_red, b, ldb, P, c, ldc, bias, M, N);
  else if (mode == FG_ADD_BIAS)
    fg_panels_2(a, a_row, a_red, b, ldb, P, c, ldc, bias, M, N);
  else
    fg_panels_0(a, a_row, a_red, b, ldb, P, c, ldc, bias, M, N);
#else
  fg_portable(a, a_row, a_red, b, ldb, c, ldc, bias, M, 0, N, P, mode);
#endif
}

/* out (C, R) = aᵀ for a (R, C) with row stride lda; out's rows ldo floats apart (ldo >= R, so
   several transposes can go side by side into one array). A copy, in 16 × 16 blocks so that
   both sides stay in cache (torch's strided copy took 7.7 µs for 192 × 64). */
static void fg_transpose(const float* restrict a, int64_t R, int64_t C, int64_t lda,
                         float* restrict out, int64_t ldo) {
  for (int64_t r0 = 0; r0 < R; r0 += 16) {
    const int64_t r1 = r0 + 16 < R ? r0 + 16 : R;
    for (int64_t c0 = 0; c0 < C; c0 += 16) {
      const int64_t c1 = c0 + 16 < C ? c0 + 16 : C;
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) out[c * ldo + r] = a[r * lda + c];
    }
  }
}

#define FG_RC 128 /* fg_wgrad: rows per chunk */

/* Idle lanes in the masked last vector when a product is vectorised along n columns. */
static int64_t fg_idle_lanes(int64_t n) {
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
static int fg_wgrad(const float* restrict d, int64_t ldd, const float* restrict x, int64_t ldx,
                    float* restrict g, float* restrict b, int64_t R, int64_t N, int64_t K,
                    int orient) {
  static const float one = 1.0f; /* b = 1ᵀ D: the tiles' chains fma(1, d, acc) = acc + d exactly */
  if (orient < 0) /* ties: 1, which needs no transpose */
    orient = fg_idle_lanes(K) * N <= fg_idle_lanes(N) * K ? 1 : 0;
  float* gt = NULL;
  if (orient == 1) {
    for (int64_t e = 0; e < N * K; ++e) g[e] = 0.0f;
  } else {
    gt = calloc((size_t)(K * N) + 1, sizeof(float));
    if (!gt) return -1;
  }
  if (b)
    for (int64_t n = 0; n < N; ++n) b[n] = 0.0f;
  for (int64_t c = 0; c < R; c += FG_RC) {
    int64_t rows = R - c < FG_RC ? R - c : FG_RC;
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

#endif
