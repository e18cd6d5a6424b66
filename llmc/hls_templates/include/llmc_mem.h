// llmc accelerator: memory access on the m_axi ports and number conversions. The engines move 512-bit words; a
// weight, KV or io port is LLMC_PORT_BITS wide (128, 256 or 512: the design's port width, rendered before this
// header), so a word is one beat of a 512-bit port or the next PORT_BEATS beats of a narrower one.
#ifndef LLMC_MEM_H
#define LLMC_MEM_H

#if defined(__GNUC__) && !defined(__clang__) && !defined(__SYNTHESIS__)
// g++ 12 at -O2 reports false positives inside ap_private (the ap_types headers): words of a
// copied ap_uint<512> "maybe uninitialized", and loops of its range extraction it cannot bound.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Waggressive-loop-optimizations"
#endif

#include <ap_int.h>
#include <cstdint>
#include <cstring>

#include "llmc_cycles.h"

namespace llmc {

#ifndef LLMC_PORT_BITS
#define LLMC_PORT_BITS 512
#endif

typedef ap_uint<512> word_t;
typedef ap_uint<LLMC_PORT_BITS> port_t;
static const int WORD_BYTES = 64;
static const int PORT_BITS = LLMC_PORT_BITS;
static const int PORT_BEATS = 512 / PORT_BITS;  // port beats per word
static_assert(PORT_BITS == 128 || PORT_BITS == 256 || PORT_BITS == 512, "port width: 128, 256 or 512 bits");

// Word w of a port: its PORT_BEATS beats, least significant first (one read per beat: a narrower port takes
// PORT_BEATS cycles a word in a pipelined loop).
inline word_t port_word(const port_t* port, uint64_t w) {
  word_t out;
  for (int b = 0; b < PORT_BEATS; ++b) {
    LLMC_UNROLL;
    out.range(PORT_BITS * b + PORT_BITS - 1, PORT_BITS * b) = port[w * PORT_BEATS + b];
  }
  return out;
}

// Write word w of a port as its PORT_BEATS beats.
inline void set_port_word(port_t* port, uint64_t w, const word_t& word) {
  for (int b = 0; b < PORT_BEATS; ++b) {
    LLMC_UNROLL;
    port[w * PORT_BEATS + b] = word.range(PORT_BITS * b + PORT_BITS - 1, PORT_BITS * b);
  }
}

// Copy n bytes starting at byte offset off of a port into dst (burst over whole words, at the memory's rate).
inline void read_bytes(const port_t* port, uint64_t off, uint8_t* dst, int n) {
  uint64_t word = off / WORD_BYTES;
  int skip = (int)(off % WORD_BYTES);
  Transaction transaction(port, off, n, false);
  PortClock clock;
  for (int i = 0; i < n; ++word) {
    LLMC_PIPELINE(LLMC_TRIP_TRANSFER);
    clock.beat();
    const word_t w = port_word(port, word);
    for (int b = skip; b < WORD_BYTES && i < n; ++b, ++i) {
      dst[i] = (uint8_t)w.range(8 * b + 7, 8 * b);
    }
    skip = 0;
  }
}

// The 64 bytes of a word, least significant first (wiring under synthesis).
inline void word_bytes(const word_t& word, uint8_t* out) {
  for (int b = 0; b < WORD_BYTES; ++b) {
    LLMC_UNROLL;
    out[b] = (uint8_t)word.range(8 * b + 7, 8 * b);
  }
}

// Write n bytes from src at byte offset off of a port (read-modify-write of partial words). With `done`, the bytes
// come from a producer `chunk` at a time: a word leaves once the chunk holding its last byte is done (C-simulation:
// done[c] the cycle chunk c was; under synthesis a FIFO between the two).
inline void write_bytes(port_t* port, uint64_t off, const uint8_t* src, int n, const uint64_t* done = nullptr,
                        int chunk = 1) {
  uint64_t word = off / WORD_BYTES;
  int skip = (int)(off % WORD_BYTES);
  Transaction transaction(port, off, n, true);
  PortClock clock;
  for (int i = 0; i < n; ++word) {
    LLMC_PIPELINE(LLMC_TRIP_TRANSFER);
#ifndef __SYNTHESIS__
    if (done != nullptr) {
      const int last = i + (WORD_BYTES - skip < n - i ? WORD_BYTES - skip : n - i) - 1;  // the word's last byte
      if (cycle_account() < done[last / chunk]) cycle_account() = done[last / chunk];
    }
#endif
    clock.beat();
    word_t w = port_word(port, word);
    for (int b = skip; b < WORD_BYTES && i < n; ++b, ++i) {
      w.range(8 * b + 7, 8 * b) = src[i];
    }
    set_port_word(port, word, w);
    skip = 0;
  }
}

// Or `width` bits of `value` (width <= 64, value < 2^width) into a bit string held in 64-bit words at bit `at`.
inline void put_bits(uint64_t* words, int at, uint64_t value, int width) {
  const int shift = at % 64;
  words[at / 64] |= value << shift;
  if (shift + width > 64) words[at / 64 + 1] |= value >> (64 - shift);
}

// Bits [at, at + width) of a bit string held in 64-bit words (width <= 64).
inline uint64_t get_bits(const uint64_t* words, int at, int width) {
  const int shift = at % 64;
  uint64_t value = words[at / 64] >> shift;
  if (shift + width > 64) value |= words[at / 64 + 1] << (64 - shift);
  return width == 64 ? value : value & ((uint64_t{1} << width) - 1);
}

// The words of a B-bit integer, least significant first.
template <int B>
inline void to_words(const ap_uint<B>& in, uint64_t* words) {
  for (int w = 0; w * 64 < B; ++w) {
    const int hi = w * 64 + 63 < B - 1 ? w * 64 + 63 : B - 1;
    words[w] = in.range(hi, w * 64).to_uint64();
  }
}

// The B-bit integer whose bits the words hold, least significant word first.
template <int B>
inline ap_uint<B> from_words(const uint64_t* words) {
  ap_uint<B> out = 0;
  for (int w = 0; w * 64 < B; ++w) {
    const int hi = w * 64 + 63 < B - 1 ? w * 64 + 63 : B - 1;
    out.range(hi, w * 64) = words[w];
  }
  return out;
}

inline uint32_t load_u32(const uint8_t* p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

inline int32_t load_i32(const uint8_t* p) { return (int32_t)load_u32(p); }

inline int16_t load_i16(const uint8_t* p) { return (int16_t)((uint16_t)p[0] | (uint16_t)p[1] << 8); }

inline float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint32_t float_to_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

inline void store_u32(uint8_t* p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

// IEEE half to float, exact (normals, subnormals, infinities, NaN).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h >> 15) << 31;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t man = h & 0x3FF;
  if (exp == 0x1F) return bits_to_float(sign | 0x7F800000u | man << 13);
  if (exp == 0) {
    if (man == 0) return bits_to_float(sign);
    exp = 113;  // 127 - 15 + 1, then normalise the subnormal
    while (!(man & 0x400)) {
      man <<= 1;
      --exp;
    }
    man &= 0x3FF;
    return bits_to_float(sign | exp << 23 | man << 13);
  }
  return bits_to_float(sign | (exp + 112) << 23 | man << 13);
}

// A weight group's integer scale rint(h * 2^shift), rounded half to even, from its f16 value h (finite): the
// significand shifted left, or right with rounding (llmc/backends/fpga/pack.py: half_scale_ints).
inline int64_t half_scale(uint16_t h, int shift) {
  const int exp = (h >> 10) & 0x1F;
  const int64_t significand = exp > 0 ? (int64_t)((h & 0x3FF) | 0x400) : (int64_t)(h & 0x3FF);
  const int power = (exp > 0 ? exp : 1) - 25 + shift;  // h * 2^shift = significand * 2^power
  int64_t magnitude;
  if (power >= 0) {
    magnitude = significand << (power < 52 ? power : 52);
  } else {
    const int right = -power < 52 ? -power : 52;
    const int64_t kept = significand >> right, rest = significand & (((int64_t)1 << right) - 1);
    const int64_t half = (int64_t)1 << (right - 1);
    magnitude = kept + (rest > half || (rest == half && (kept & 1)) ? 1 : 0);
  }
  return h & 0x8000 ? -magnitude : magnitude;
}

}  // namespace llmc

#endif
