/* Per-element work of the Q-learning loss that torch would spread over many small operations.
 *
 * double_q_select: the double-Q choice of the next action and the target network's value of it,
 * the same floats as masked_fill(~avail, -inf), argmax(-1) and gather (no arithmetic: a choice
 * and a copy).
 *
 * td_stats: the logged means and maxima of one update's loss (logging only, summed in double).
 *
 * Arrays whose two outer dimensions (episode b, step t) may be strided views are passed with
 * those two strides in elements; their inner dimensions (agent i, action a) are contiguous. */
#include <math.h>
#include <stdint.h>

/* For every episode b < B, step t < T and agent i < N: a* = the first index of the largest of
   v_a = avail[b, t, i, a] ? q_on[b, t, i, a] : -inf over a < A, where NaN counts as larger
   than any number (torch.argmax's order; the first NaN wins); out[b, t, i] = q_tg[b, t, i, a*].
   out is (B, T, N) contiguous. */
void double_q_select(const float* q_on, int64_t on_b, int64_t on_t, const float* q_tg,
                     int64_t tg_b, int64_t tg_t, const uint8_t* avail, int64_t av_b,
                     int64_t av_t, float* out, int64_t B, int64_t T, int64_t N, int64_t A) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < N; ++i) {
        const float* q = q_on + b * on_b + t * on_t + i * A;
        const uint8_t* ok = avail + b * av_b + t * av_t + i * A;
        float best = ok[0] ? q[0] : -INFINITY;
        int64_t arg = 0;
        for (int64_t a = 1; a < A; ++a) {
          float v = ok[a] ? q[a] : -INFINITY;
          if (!isnan(best) && (isnan(v) || v > best)) {
            best = v;
            arg = a;
          }
        }
        out[(b * T + t) * N + i] = q_tg[b * tg_b + t * tg_t + i * A + arg];
      }
}

/* Over the M = B·T transitions with weights mask[k] (1 on filled steps, 0 elsewhere) and
   n = max(Σ mask, 1): out[0] = Σ |q_tot − y| mask / n, out[1] = Σ mean_i(q_taken[k, i]) mask / n,
   out[2] = Σ q_tot mask / n, out[3] = Σ y mask / n, out[4] = max |y| and out[5] = max |reward|
   over filled steps (0 when none). q_taken is (M, N) contiguous; the rest (M,). */
void td_stats(const float* q_tot, const float* y, const float* mask, const float* q_taken,
              const float* reward, int64_t M, int64_t N, double* out) {
  double n = 0.0, err = 0.0, taken = 0.0, tot = 0.0, tgt = 0.0, y_max = 0.0, r_max = 0.0;
  for (int64_t k = 0; k < M; ++k) {
    const double m = mask[k];
    double q_mean = 0.0;
    for (int64_t i = 0; i < N; ++i) q_mean += q_taken[k * N + i];
    q_mean /= (double)N;
    n += m;
    err += fabs((double)q_tot[k] - (double)y[k]) * m;
    taken += q_mean * m;
    tot += (double)q_tot[k] * m;
    tgt += (double)y[k] * m;
    if (m != 0.0) {
      const double ya = fabs((double)y[k]), ra = fabs((double)reward[k]);
      if (ya > y_max || isnan(ya)) y_max = ya;
      if (ra > r_max || isnan(ra)) r_max = ra;
    }
  }
  n = n < 1.0 ? 1.0 : n;
  out[0] = err / n;
  out[1] = taken / n;
  out[2] = tot / n;
  out[3] = tgt / n;
  out[4] = y_max;
  out[5] = r_max;
}
