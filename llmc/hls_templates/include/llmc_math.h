// The accelerator's arithmetic, bit for bit that of llmc/ir/ops/hw_math.py and the hw_* ops of llmc/ir/ops/hw.py:
// activations int32 Q15.16, exact int64 reductions, IEEE float32 scalar math in the order written.
// Compile with -ffp-contract=off (no fused multiply-add) and never with -ffast-math. Synthesizable C++14.
#ifndef LLMC_MATH_H
#define LLMC_MATH_H

#include <cmath>
#include <cstdint>

#include "llmc_cycles.h"
#include "llmc_tables.h"

// HLS directives, emitted only for synthesis (g++ -Wall rejects unknown pragmas).
#ifdef __SYNTHESIS__
#define LLMC_HLS(directive) _Pragma(#directive)
#else
#define LLMC_HLS(directive)
#endif

// The SFU's width: elements per cycle of a pass over a row (the kernel defines it from its design).
#ifndef LLMC_SFU_LANES
#define LLMC_SFU_LANES 1
#endif

namespace llmc {

constexpr int SFU_WIDTH = LLMC_SFU_LANES;
constexpr float FIXED_ONE = static_cast<float>(1 << ACT_FRAC);  // 2^16
constexpr float FIXED_STEP = 1.0f / FIXED_ONE;                    // 2^-16
constexpr float F32_INT32_MIN = -2147483648.0f;
constexpr int ROPE_FRAC = 30;  // Q2.30 rotary tables
constexpr float ATTN_ONE = 32768.0f;  // softmax weights in units of 2^-15

// 2^y: 0 below -126 (and for NaN), +inf from 128, else ldexp(T[i] + (T[i+1] - T[i]) * t, n) with n = floor(y),
// u = (y - n) * 256, i = trunc(u), t = u - i. For y in [-2^-25, 0), y - n rounds to 1 and u to 256: i stays 255
// (t = 1), which gives 2^(n+1) = 1, the value of the formula with any finite T[257].
inline float exp2_f32(float y) {
  LLMC_HLS(HLS INLINE)
  if (!(y >= -126.0f)) return 0.0f;
  if (y >= 128.0f) return INFINITY;
  const float n = std::floor(y);
  const float u = (y - n) * static_cast<float>(EXP2_STEPS);
  int i = static_cast<int>(u);
  if (i > EXP2_STEPS - 1) i = EXP2_STEPS - 1;
  const float t = u - static_cast<float>(i);
  const float lo = EXP2_TABLE[i];
  return std::ldexp(lo + (EXP2_TABLE[i + 1] - lo) * t, static_cast<int>(n));
}

// hw_math.tanh_f32: e = exp2_f32(-2 |a| log2 e), (1 - e) / (1 + e) with the sign of a.
inline float tanh_f32(float a) {
  LLMC_HLS(HLS INLINE)
  const float e = exp2_f32(-2.0f * (a < 0 ? -a : a) * LOG2E);
  const float r = (1.0f - e) / (1.0f + e);
  return a < 0 ? -r : r;
}

// float32 in fixed-point units to int32: round half to even, NaN -> 0, saturated.
inline int32_t to_fixed(float y) {
  LLMC_HLS(HLS INLINE)
  float r = std::nearbyint(y);
  if (std::isnan(r)) return 0;
  if (r < F32_INT32_MIN) r = F32_INT32_MIN;
  if (r > F32_INT32_MAX) r = F32_INT32_MAX;
  return static_cast<int32_t>(r);
}

// Q15.16 to its float32 value.
inline float fixed_to_f32(int32_t x) {
  LLMC_HLS(HLS INLINE)
  return static_cast<float>(x) * FIXED_STEP;
}

inline int32_t saturate(int64_t x) {
  LLMC_HLS(HLS INLINE)
  return static_cast<int32_t>(x < INT32_MIN ? INT32_MIN : x > INT32_MAX ? INT32_MAX : x);
}

// a / b for b > 0, rounded half away from zero.
inline int64_t div_round(int64_t a, int64_t b) {
  LLMC_HLS(HLS INLINE)
  const int64_t mag = (2 * (a < 0 ? -a : a) + b) / (2 * b);
  return a < 0 ? -mag : mag;
}

// a / 2^n rounded half up; a itself for n = 0.
inline int64_t shift_round(int64_t a, int n) {
  LLMC_HLS(HLS INLINE)
  return n > 0 ? (a + (int64_t{1} << (n - 1))) >> n : a;
}

// Bits needed for a non-negative value: 0 for 0, k + 1 for [2^k, 2^(k+1)).
inline int bit_length(int64_t v) {
  LLMC_HLS(HLS INLINE)
  int bits = 0;
  for (int b = 0; b < 63; ++b) {
    LLMC_HLS(HLS UNROLL)
    if ((v >> b) != 0) bits = b + 1;
  }
  return bits;
}

// Symmetric int8 codes of a row of n values, per group of columns: s = max(1, ceil(max|x| / 127)),
// code = clamp(div_round(x, s), -127, 127). Writes n codes and n / group scales; with sum_group > 0 also the sum
// of the codes of every sum_group columns (sums [n / sum_group]), added up as the codes pass makes them.
inline void quant8(const int32_t* x, int n, int group, int8_t* codes, int32_t* scales, int sum_group = 0,
                   int32_t* sums = nullptr) {
  for (int i = 0; sum_group > 0 && i < n / sum_group; ++i) sums[i] = 0;
  for (int g = 0; g < n / group; ++g) {
    const int32_t* xg = x + g * group;
    int64_t amax = 0;
    for (int j0 = 0; j0 < group; j0 += SFU_WIDTH) {
      LLMC_PIPELINE(LLMC_TRIP_SFU);
      for (int j = j0; j < j0 + SFU_WIDTH && j < group; ++j) {
        LLMC_UNROLL;
        const int64_t a = xg[j] < 0 ? -static_cast<int64_t>(xg[j]) : xg[j];
        if (a > amax) amax = a;
      }
    }
    int64_t s = (amax + QMAX8 - 1) / QMAX8;
    if (s < 1) s = 1;
    scales[g] = static_cast<int32_t>(s);
    for (int j0 = 0; j0 < group; j0 += SFU_WIDTH) {
      LLMC_PIPELINE(LLMC_TRIP_SFU);
      for (int j = j0; j < j0 + SFU_WIDTH && j < group; ++j) {
        LLMC_UNROLL;
        int64_t q = div_round(xg[j], s);
        if (q > QMAX8) q = QMAX8;
        if (q < -QMAX8) q = -QMAX8;
        codes[g * group + j] = static_cast<int8_t>(q);
        if (sum_group > 0) sums[(g * group + j) / sum_group] += static_cast<int32_t>(q);
      }
    }
  }
}

// Matrix-engine output stage: rint(float32(float64(total)) * (float32(x_scale) * 2^-shift)), saturated.
// total is the exact sum (below 2^53).
inline int32_t requantize(int64_t total, int32_t x_scale, int shift) {
  LLMC_HLS(HLS INLINE)
  const float factor = static_cast<float>(x_scale) * std::ldexp(1.0f, -shift);
  return to_fixed(static_cast<float>(static_cast<double>(total)) * factor);
}

// sum xq * (w - zero), exact.
template <typename W>
inline int64_t group_dot(const int8_t* xq, const W* w, int len, int zero) {
  int64_t acc = 0;
  for (int j = 0; j < len; ++j) {
    LLMC_PIPELINE(LLMC_TRIP_HIDDEN);
    acc += static_cast<int64_t>(xq[j]) * (static_cast<int64_t>(w[j]) - zero);
  }
  return acc;
}

// sum xq over len codes (a group's activation sum, which its minimum multiplies).
inline int64_t group_sum(const int8_t* xq, int len) {
  int64_t acc = 0;
  for (int j = 0; j < len; ++j) {
    LLMC_PIPELINE(LLMC_TRIP_HIDDEN);
    acc += xq[j];
  }
  return acc;
}

// hw_matmul for one activation row, quantized to codes xq [k] with scale xs (quant8 with group k), against
// weight codes [n, k] row-major (W: int8_t, or uint8_t for unsigned 8-bit codes) with scales [n, k / group],
// optional zeros and minimums [n, k / group] and bias [n] (nullptr when absent):
// y [n] = requantize(sum_g (group_dot * scale - sum(xq over g) * min)) (+ bias, saturating).
template <typename W>
inline void matmul_row(const int8_t* xq, int32_t xs, const W* codes, const int32_t* scales, const int16_t* zeros,
                       const int32_t* mins, const int32_t* bias, int n, int k, int group, int shift, int32_t* y) {
  const int groups = k / group;
  for (int o = 0; o < n; ++o) {
    const W* row = codes + static_cast<int64_t>(o) * k;
    int64_t total = 0;
    for (int g = 0; g < groups; ++g) {
      const int zero = zeros ? zeros[o * groups + g] : 0;
      total += group_dot(xq + g * group, row + g * group, group, zero) * scales[o * groups + g];
      if (mins) total -= group_sum(xq + g * group, group) * mins[o * groups + g];
    }
    const int32_t v = requantize(total, xs, shift);
    y[o] = bias ? saturate(static_cast<int64_t>(v) + bias[o]) : v;
  }
}

// r = 1 / sqrt(mean(d^2) + eps) over d_j = x_j * scale - offset (exact int64, |d| < 2^47): sh = max(0,
// bit_length(max|d|) - 19), ss = sum((d >> sh)^2) (exact), m = (float32(ss) * 2^(2 sh - 32)) / float32(c).
inline float inverse_rms(const int32_t* x, int c, int64_t scale, int64_t offset, float eps) {
  int64_t amax = 0;
  for (int j0 = 0; j0 < c; j0 += SFU_WIDTH) {
    LLMC_PIPELINE(LLMC_TRIP_SFU);
    for (int j = j0; j < j0 + SFU_WIDTH && j < c; ++j) {
      LLMC_UNROLL;
      const int64_t d = static_cast<int64_t>(x[j]) * scale - offset;
      const int64_t a = d < 0 ? -d : d;
      if (a > amax) amax = a;
    }
  }
  const int bits = bit_length(amax);
  const int sh = bits > 19 ? bits - 19 : 0;
  int64_t ss = 0;
  for (int j0 = 0; j0 < c; j0 += SFU_WIDTH) {
    LLMC_PIPELINE(LLMC_TRIP_SFU);
    for (int j = j0; j < j0 + SFU_WIDTH && j < c; ++j) {
      LLMC_UNROLL;
      const int64_t v = (static_cast<int64_t>(x[j]) * scale - offset) >> sh;
      ss += v * v;
    }
  }
  const float m = (static_cast<float>(static_cast<double>(ss)) * std::ldexp(1.0f, 2 * sh - 32)) / static_cast<float>(c);
  return 1.0f / std::sqrt(m + eps);
}

// hw_rms_norm of one row of c values: r = inverse_rms(x), y = rint((float32(x) * r) * w).
inline void rms_norm_row(const int32_t* x, const float* w, int c, float eps, int32_t* y) {
  const float r = inverse_rms(x, c, 1, 0, eps);
  for (int j0 = 0; j0 < c; j0 += SFU_WIDTH) {
    LLMC_PIPELINE(LLMC_TRIP_SFU);
    for (int j = j0; j < j0 + SFU_WIDTH && j < c; ++j) {
      LLMC_UNROLL;
      y[j] = to_fixed((static_cast<float>(x[j]) * r) * w[j]);
    }
  }
}

// hw_rope of one row of c values (heads of head_dim columns; the halves of the first rotary_dim rotated, the
// rest passed through) with the Q2.30 table rows of the token's position (rotary_dim / 2 entries):
// y1 = (x1 c - x2 s) >> 30, y2 = (x2 c + x1 s) >> 30, rounded half up, saturated. x and y may be the same array.
inline void rope_row(const int32_t* x, int32_t* y, int c, int head_dim, int rotary_dim, const int32_t* cos_row,
                     const int32_t* sin_row) {
  const int half = rotary_dim / 2;
  const int pairs = c / head_dim * half;  // rotated pairs of the row; one SFU lane rotates a pair
  for (int i0 = 0; i0 < pairs; i0 += SFU_WIDTH) {
    LLMC_PIPELINE(LLMC_TRIP_SFU);
    for (int i = i0; i < i0 + SFU_WIDTH && i < pairs; ++i) {
      LLMC_UNROLL;
      const int h = i / half * head_dim, j = i % half;
      const int64_t x1 = x[h + j], x2 = x[h + half + j], cs = cos_row[j], sn = sin_row[j];
      y[h + j] = saturate(shift_round(x1 * cs - x2 * sn, ROPE_FRAC));
      y[h + half + j] = saturate(shift_round(x2 * cs + x1 * sn, ROPE_FRAC));
    }
  }
  if (rotary_dim < head_dim) {  // the columns past rotary_dim of every head pass through
    for (int j0 = 0; j0 < c; j0 += SFU_WIDTH) {
      LLMC_PIPELINE(LLMC_TRIP_SFU);
      for (int j = j0; j < j0 + SFU_WIDTH && j < c; ++j) {
        LLMC_UNROLL;
        if (j % head_dim >= rotary_dim) y[j] = x[j];
      }
    }
  }
}

// hw_layer_norm of one row of c values: d = c x - sum x (exact: c times the deviation), hw_rms_norm's
// scaling of d with eps' = (eps * c) * c, y = rint((d * r) * w + b * 2^16).
inline void layer_norm_row(const int32_t* x, const float* w, const float* b, int c, float eps, int32_t* y) {
  int64_t sum = 0;
  for (int j0 = 0; j0 < c; j0 += SFU_WIDTH) {
    LLMC_PIPELINE(LLMC_TRIP_SFU);
    for (int j = j0; j < j0 + SFU_WIDTH && j < c; ++j) {
      LLMC_UNROLL;
      sum += x[j];
    }
  }
  const float r = inverse_rms(x, c, c, sum, (eps * static_cast<float>(c)) * static_cast<float>(c));
  for (int j0 = 0; j0 < c; j0 += SFU_WIDTH) {
    LLMC_PIPELINE(LLMC_TRIP_SFU);
    for (int j = j0; j < j0 + SFU_WIDTH && j < c; ++j) {
      LLMC_UNROLL;
      y[j] = to_fixed((static_cast<float>(static_cast<int64_t>(x[j]) * c - sum) * r) * w[j] + b[j] * FIXED_ONE);
    }
  }
}

// A key's attention score: float32(dot) * ((float32(qs) * float32(ks)) * c), soft-capped when softcap != 0.
inline float attention_score(int64_t dot, int32_t qs, int32_t ks, float c, float softcap) {
  const float score = static_cast<float>(dot) * ((static_cast<float>(qs) * static_cast<float>(ks)) * c);
  return softcap != 0.0f ? tanh_f32(score / softcap) * softcap : score;
}

// A key's softmax weight in units of 2^-15: rint(exp2_f32((score - peak) * log2 e) * 2^15).
inline int64_t attention_weight(float score, float peak) {
  return static_cast<int64_t>(std::nearbyint(exp2_f32((score - peak) * LOG2E) * ATTN_ONE));
}

// An output column: rint(float32(float64(sum ei vc vs)) / float32(sum ei)).
inline int32_t attention_output(int64_t acc, int64_t den) {
  return to_fixed(static_cast<float>(static_cast<double>(acc)) / static_cast<float>(den));
}

// hw_attention for one query row and head: query codes qc [d] with scale qs (quant8 with group d) over the int8
// cache kc / vc [S, kv_heads, d] with scales ks / vs [S, kv_heads], keys s_first..s_visible-1 visible, scale the
// attribute as float32 (c = scale * 2^-32 is then float32(scale * 2^-32) exactly). Pass 1 stores
// score = float32(dot) * ((float32(qs) * float32(ks)) * c) in score_buf [S] and takes the maximum; pass 2
// accumulates ei = rint(exp2_f32((score - max) * log2 e) * 2^15): out = rint(float32(float64(sum ei vc vs)) /
// float32(sum ei)). d <= MAX_D; no visible key gives 0.
template <int MAX_D = 256>
inline void attention_row(const int8_t* qc, int32_t qs, const int8_t* kc, const int32_t* ks, const int8_t* vc,
                          const int32_t* vs, int s_first, int s_visible, int kv_head, int kv_heads, int d,
                          float scale, float softcap, float* score_buf, int32_t* out) {
  const float c = scale * (1.0f / 4294967296.0f);
  float peak = -INFINITY;
  for (int s = s_first; s < s_visible; ++s) {
    const int64_t slot = static_cast<int64_t>(s) * kv_heads + kv_head;
    const int8_t* key = kc + slot * d;
    int64_t dot = 0;
    for (int j = 0; j < d; ++j) {
      LLMC_PIPELINE(LLMC_TRIP_HEAD_DIM);
      dot += static_cast<int64_t>(qc[j]) * key[j];
    }
    const float score = attention_score(dot, qs, ks[slot], c, softcap);
    score_buf[s] = score;
    if (score > peak) peak = score;
  }
  int64_t acc[MAX_D];
  for (int j = 0; j < d; ++j) {
    LLMC_PIPELINE(LLMC_TRIP_HEAD_DIM);
    acc[j] = 0;
  }
  int64_t den = 0;
  for (int s = s_first; s < s_visible; ++s) {
    const int64_t slot = static_cast<int64_t>(s) * kv_heads + kv_head;
    const int64_t ei = attention_weight(score_buf[s], peak);
    den += ei;
    const int8_t* value = vc + slot * d;
    const int64_t v_scale = vs[slot];
    for (int j = 0; j < d; ++j) {
      LLMC_PIPELINE(LLMC_TRIP_HEAD_DIM);
      acc[j] += ei * (value[j] * v_scale);
    }
  }
  for (int j = 0; j < d; ++j) {
    LLMC_PIPELINE(LLMC_TRIP_HEAD_DIM);
    out[j] = attention_output(acc[j], den);
  }
}

// hw_act silu: xf = float32(x) * 2^-16, y = xf * (1 / (1 + exp2_f32(-xf * log2 e))), rint(y * 2^16).
inline int32_t silu_fixed(int32_t x) {
  LLMC_HLS(HLS INLINE)
  const float xf = fixed_to_f32(x);
  const float sig = 1.0f / (1.0f + exp2_f32(-xf * LOG2E));
  return to_fixed((xf * sig) * FIXED_ONE);
}

// hw_act gelu_tanh: GELU's tanh form as x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3).
inline int32_t gelu_tanh_fixed(int32_t x) {
  LLMC_HLS(HLS INLINE)
  const float xf = fixed_to_f32(x);
  const float z = (xf + (GELU_CUBIC * (xf * xf)) * xf) * GELU_2U;
  const float sig = 1.0f / (1.0f + exp2_f32(-z * LOG2E));
  return to_fixed((xf * sig) * FIXED_ONE);
}

// hw_math.erf_f32: Abramowitz & Stegun 7.1.26 in float32 steps.
inline float erf_f32(float z) {
  LLMC_HLS(HLS INLINE)
  const float a = z < 0 ? -z : z;
  const float t = 1.0f / (1.0f + ERF_P * a);
  float poly = ERF_A[4];
  for (int i = 3; i >= 0; --i) poly = poly * t + ERF_A[i];
  poly = poly * t;
  const float r = 1.0f - poly * exp2_f32(-(a * a) * LOG2E);
  return z < 0 ? -r : r;
}

// hw_act gelu: GELU's erf form, x * (0.5 * (1 + erf(x / sqrt 2))).
inline int32_t gelu_fixed(int32_t x) {
  LLMC_HLS(HLS INLINE)
  const float xf = fixed_to_f32(x);
  const float half = 0.5f * (1.0f + erf_f32(xf * INV_SQRT2));
  return to_fixed((xf * half) * FIXED_ONE);
}

inline int32_t relu_fixed(int32_t x) {
  LLMC_HLS(HLS INLINE)
  return x > 0 ? x : 0;
}

// hw_mul: (a * b + 2^15) >> 16, saturated.
inline int32_t mul_fixed(int32_t a, int32_t b) {
  LLMC_HLS(HLS INLINE)
  return saturate(shift_round(static_cast<int64_t>(a) * b, ACT_FRAC));
}

// hw_add: saturating.
inline int32_t add_sat(int32_t a, int32_t b) {
  LLMC_HLS(HLS INLINE)
  return saturate(static_cast<int64_t>(a) + b);
}

// hw_scale: rint(float32(x) * w).
inline int32_t scale_fixed(int32_t x, float w) {
  LLMC_HLS(HLS INLINE)
  return to_fixed(static_cast<float>(x) * w);
}

// hw_route of one row of router logits x[0..experts): the top_k largest, ties to the lower expert, then
// e_i = exp2_f32((lf_i - lf_max) * log2 e) with lf = fixed_to_f32(x), each chosen weight e_i / s with s the float32
// sum, in order, of the chosen e (normalize) or of every e, as rint(w * 2^16): out = [e0, w0, e1, w1, ...].
inline void route_row(const int32_t* x, int experts, int top_k, bool normalize, int32_t* out) {
  for (int j = 0; j < top_k; ++j) {
    int best = -1;
    for (int i = 0; i < experts; ++i) {
      LLMC_PIPELINE(LLMC_TRIP_HIDDEN);
      bool taken = false;
      for (int p = 0; p < j; ++p) taken = taken || out[2 * p] == i;
      if (!taken && (best < 0 || x[i] > x[best])) best = i;
    }
    out[2 * j] = best;
  }
  const float peak = fixed_to_f32(x[out[0]]);
  float total = 0.0f;
  for (int i = 0; i < (normalize ? top_k : experts); ++i) {
    LLMC_PIPELINE(LLMC_TRIP_HIDDEN);
    total += exp2_f32((fixed_to_f32(x[normalize ? out[2 * i] : i]) - peak) * LOG2E);
  }
  for (int j = 0; j < top_k; ++j) {
    LLMC_PIPELINE(LLMC_TRIP_HIDDEN);
    out[2 * j + 1] = to_fixed(exp2_f32((fixed_to_f32(x[out[2 * j]]) - peak) * LOG2E) / total * FIXED_ONE);
  }
}

// hw_embed of one table entry (f16 or f32, as float32): rint(v * 2^16).
inline int32_t embed_fixed(float v) {
  LLMC_HLS(HLS INLINE)
  return to_fixed(v * FIXED_ONE);
}

}  // namespace llmc

#endif  // LLMC_MATH_H
