// C++ model of the LUT-mpGEMM lookup-accumulate unit (rtl/llmc_lut_mac_*.v), bit for bit: per chunk of g int8
// activations a table of its 2^g subset sums, one lookup per bit-plane of the unsigned codes, the zero point's bits
// selecting the chunk sum to subtract, shifted by the plane. Results are exact sums x * (code - zero).
#ifndef LLMC_LUT_MAC_H
#define LLMC_LUT_MAC_H

#include <cstdint>

namespace llmc {

constexpr int LUT_MAX_G = 8;
constexpr int LUT_MAX_BITS = 8;

// One chunk: T[p] = sum_j bit_j(p) * x[j] (built as T[p] = T[p with its lowest bit cleared] + x[that bit]),
// result sum_b 2^b * (T[planes[b]] - bit_b(zero) * T[2^g - 1]) for b < bits.
inline int64_t lut_chunk(const int8_t* x, const uint32_t* planes, int g, int bits, int zero) {
  int32_t table[1 << LUT_MAX_G];
  table[0] = 0;
  for (int p = 1; p < (1 << g); ++p) {
    int low = 0;
    while (!((p >> low) & 1)) ++low;
    table[p] = table[p & (p - 1)] + x[low];
  }
  const int32_t chunk = table[(1 << g) - 1];
  int64_t sum = 0;
  for (int b = 0; b < bits; ++b) {
    const int32_t term = table[planes[b]] - (((zero >> b) & 1) ? chunk : 0);
    sum += static_cast<int64_t>(term) * (int64_t{1} << b);
  }
  return sum;
}

}  // namespace llmc

#endif  // LLMC_LUT_MAC_H
