/* A small float32 matrix product for the learner's kernels: C (=|+=) A·B, every element summed
 * over the reduction index p = 0, 1, ... in that order with one fused multiply-add per term.
 *
 * A fused multiply-add is one correctly rounded operation, so an element's value depends only on
 * its terms and their order: the vector tiles (AVX-512: 6 rows × 64 columns; AVX2 with FMA:
 * 6 × 16) and the portable loop (other CPUs, and the columns that do not fill a vector) give the
 * same floats.
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
#else
#define FG_VW 0
#endif
#define FG_MT 6 /* output rows per tile */

#if FG_VW > 0
/* C[0 : mt, 0 : nv·VW] (=|+=) Σ_{p < P} A[i, p] B[p, ·] for compile-time mt ≤ 6, nv ≤ NV, add. */
static inline __attribute__((always_inline)) void fg_tile(
    const float* a, int64_t a_row, int64_t a_red, const float* b, int64_t ldb, int64_t P,
    float* c, int64_t ldc, const int mt, const int nv, const int add) {
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
      if (v < nv) bv[v] = FG_LOAD(bp + v * FG_VW);
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
          FG_STORE(cp, add ? FG_ADD(FG_LOAD(cp), acc[i][v]) : acc[i][v]);
        }
}

/* All M rows of one panel of nv vectors of columns, for compile-time nv and add. */
static inline __attribute__((always_inline)) void fg_panel(
    const float* a, int64_t a_row, int64_t a_red, const float* b, int64_t ldb, int64_t P,
    float* c, int64_t ldc, int64_t M, const int nv, const int add) {
  int64_t m = 0;
  for (; m + FG_MT <= M; m += FG_MT)
    fg_tile(a + m * a_row, a_row, a_red, b, ldb, P, c + m * ldc, ldc, FG_MT, nv, add);
  const float* at = a + m * a_row;
  float* ct = c + m * ldc;
  switch (M - m) {
    case 1: fg_tile(at, a_row, a_red, b, ldb, P, ct, ldc, 1, nv, add); break;
    case 2: fg_tile(at, a_row, a_red, b, ldb, P, ct, ldc, 2, nv, add); break;
    case 3: fg_tile(at, a_row, a_red, b, ldb, P, ct, ldc, 3, nv, add); break;
    case 4: fg_tile(at, a_row, a_red, b, ldb, P, ct, ldc, 4, nv, add); break;
    case 5: fg_tile(at, a_row, a_red, b, ldb, P, ct, ldc, 5, nv, add); break;
    default: break;
  }
}

#define FG_PANELS(ADD)                                                                      \
  static void fg_panels_##ADD(const float* a, int64_t a_row, int64_t a_red, const float* b, \
                              int64_t ldb, int64_t P, float* c, int64_t ldc, int64_t M,     \
                              int64_t n_vectors) {                                          \
    int64_t v0 = 0;                                                                         \
    for (; v0 + FG_NV <= n_vectors; v0 += FG_NV)                                            \
      fg_panel(a, a_row, a_red, b + v0 * FG_VW, ldb, P, c + v0 * FG_VW, ldc, M, FG_NV, ADD);\
    const float* bt = b + v0 * FG_VW;                                                       \
    float* ct = c + v0 * FG_VW;                                                             \
    switch (n_vectors - v0) {                                                               \
      case 1: fg_panel(a, a_row, a_red, bt, ldb, P, ct, ldc, M, 1, ADD); break;             \
      case 2: fg_panel(a, a_row, a_red, bt, ldb, P, ct, ldc, M, 2, ADD); break;             \
      case 3: fg_panel(a, a_row, a_red, bt, ldb, P, ct, ldc, M, 3, ADD); break;             \
      default: break;                                                                       \
    }                                                                                       \
  }
FG_PANELS(0)
FG_PANELS(1)
#endif

/* C (M, N) = A·B (add = 0) or C += A·B (add != 0); A (M, P) through strides a_row, a_red;
   B (P, N) with row stride ldb; C with row stride ldc. In C += A·B the product is summed first
   and then added: C + (Σ_p A B). */
static void fma_gemm(const float* a, int64_t a_row, int64_t a_red, const float* b, int64_t ldb,
                     float* c, int64_t ldc, int64_t M, int64_t N, int64_t P, int add) {
  int64_t n0 = 0;
#if FG_VW > 0
  if (add)
    fg_panels_1(a, a_row, a_red, b, ldb, P, c, ldc, M, N / FG_VW);
  else
    fg_panels_0(a, a_row, a_red, b, ldb, P, c, ldc, M, N / FG_VW);
  n0 = N / FG_VW * FG_VW;
#endif
  for (int64_t i = 0; i < M; ++i)
    for (int64_t n = n0; n < N; ++n) {
      float acc = 0.0f;
      for (int64_t p = 0; p < P; ++p) acc = fmaf(a[i * a_row + p * a_red], b[p * ldb + n], acc);
      c[i * ldc + n] = add ? c[i * ldc + n] + acc : acc;
    }
}

#endif
