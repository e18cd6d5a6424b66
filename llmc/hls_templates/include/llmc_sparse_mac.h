// C++ model of the N:M sparse MAC chain (rtl/llmc_sparse_mac_*.v), bit for bit: kept int8 or int4 weight values times
// the activations their 4-bit in-block indices select, int4 values two per 27x18 multiply as the DSP48E2 slices do.
// Results are exact (the RTL emits the low 32 bits of its 48-bit accumulator: groups up to 2^17 activations).
#ifndef LLMC_SPARSE_MAC_H
#define LLMC_SPARSE_MAC_H

#include <cstdint>

namespace llmc {

constexpr int DSP_PAIR_SHIFT = 13;
constexpr int SPARSE_MAX_N = 16;

// One slice in int4 mode: the pre-adder forms AD = xa * 2^13 + xb, the B port wb * 2^13 + wa; of the product,
// bits [25:13] (signed) plus bit 12 (the low field's sign, returning its borrow) are xa * wa + xb * wb.
inline int32_t dsp_pair(int32_t xa, int32_t wa, int32_t xb, int32_t wb) {
  const int64_t ad = static_cast<int64_t>(xa) * (int64_t{1} << DSP_PAIR_SHIFT) + xb;
  const int64_t b = static_cast<int64_t>(wb) * (int64_t{1} << DSP_PAIR_SHIFT) + wa;
  const uint64_t m = static_cast<uint64_t>(ad * b);
  const int32_t field = static_cast<int32_t>((m >> DSP_PAIR_SHIFT) & 0x1FFF);
  const int32_t middle = field >= 0x1000 ? field - 0x2000 : field;
  return middle + static_cast<int32_t>((m >> (DSP_PAIR_SHIFT - 1)) & 1);
}

// One beat of the chain: slot s multiplies weight w[s] (int8, or int4 when stored == 4) by activation sel[s]; int4
// slots 2k and 2k+1 share slice k, an odd last slot multiplies with a zero partner.
inline int64_t chain_beat(const int32_t* sel, const int32_t* w, int slots, int stored) {
  int64_t sum = 0;
  if (stored == 8) {
    for (int s = 0; s < slots; ++s) sum += static_cast<int64_t>(sel[s]) * w[s];
    return sum;
  }
  for (int s = 0; s < slots; s += 2) {
    const bool pair = s + 1 < slots;
    sum += dsp_pair(sel[s], w[s], pair ? sel[s + 1] : 0, pair ? w[s + 1] : 0);
  }
  return sum;
}

// Value i of a packed array, signed: bytes (stored == 8) or nibbles, low nibble first (stored == 4).
inline int32_t packed_value(const uint8_t* data, int64_t i, int stored) {
  if (stored == 8) return static_cast<int8_t>(data[i]);
  const int32_t v = (data[i / 2] >> (4 * (i % 2))) & 0xF;
  return v >= 8 ? v - 16 : v;
}

inline int32_t packed_index(const uint8_t* data, int64_t i) { return (data[i / 2] >> (4 * (i % 2))) & 0xF; }

}  // namespace llmc

#endif  // LLMC_SPARSE_MAC_H
