// llmc accelerator "tiny": instruction fetch and decode, matrix, LUT and special-function
// engines. The arithmetic is llmc_math.h's; the sparse DSP chain and the LUT engine are the RTL units
// in rtl/, called as HLS RTL black boxes (C-simulation runs their C++ models, rtl/*.cpp). This file
// moves data, builds the units' beats and sequences them.
#include "llmc_accel.h"  // first: llmc_mem.h sets the diagnostics for the ap_types headers

#include <hls_stream.h>
#ifndef __SYNTHESIS__
#include <vector>
#endif

#include "llmc_lut_mac.h"
#include "llmc_math.h"
#include "llmc_sparse_mac.h"

namespace llmc {

enum Opcode {
  EMBED = 1,
  NORM = 2,
  MM = 3,
  ROPE = 4,
  KVAPP = 5,
  ATTN = 6,
  ACT = 7,
  EMUL = 8,
  EADD = 9,
  ESCALE = 10,
  LNORM = 11,
  ROUTE = 12,
  XMM = 13,
  WEIGH = 14,
  HALT = 15,
  SEND = 16,
  RECV = 17,
  SYNC = 18,
};

// Each opcode's field slots in Instr.f, the MM flag fields and the function codes (llmc/backends/fpga/isa.py).
constexpr int EMBED_COLS = 0;
constexpr int EMBED_TABLE_OFF = 1;
constexpr int EMBED_BY_POSITION = 2;
constexpr int EMBED_OFFSET = 3;
constexpr int NORM_COLS = 0;
constexpr int NORM_WEIGHT_OFF = 1;
constexpr int NORM_EPS = 2;
constexpr int NORM_GROUP = 3;
constexpr int MM_N = 0;
constexpr int MM_K = 1;
constexpr int MM_GROUP = 2;
constexpr int MM_SHIFT = 3;
constexpr int MM_FLAGS = 4;
constexpr int MM_WEIGHT_OFF = 5;
constexpr int MM_TILE_BYTES = 6;
constexpr int MM_ROW_BLOCK = 7;
constexpr int MM_TILES = 8;
constexpr int MM_IO_OFF = 9;
constexpr int MM_CAP = 10;
constexpr int ROPE_COLS = 0;
constexpr int ROPE_HEAD_DIM = 1;
constexpr int ROPE_COS_OFF = 2;
constexpr int ROPE_SIN_OFF = 3;
constexpr int ROPE_ROTARY_DIM = 4;
constexpr int KVAPP_CODES_OFF = 0;
constexpr int KVAPP_SCALES_OFF = 1;
constexpr int KVAPP_KV_HEADS = 2;
constexpr int KVAPP_HEAD_DIM = 3;
constexpr int ATTN_HEADS = 0;
constexpr int ATTN_KV_HEADS = 1;
constexpr int ATTN_HEAD_DIM = 2;
constexpr int ATTN_SCALE = 3;
constexpr int ATTN_K_CODES_OFF = 4;
constexpr int ATTN_K_SCALES_OFF = 5;
constexpr int ATTN_V_CODES_OFF = 6;
constexpr int ATTN_V_SCALES_OFF = 7;
constexpr int ATTN_WINDOW = 8;
constexpr int ATTN_SOFTCAP = 9;
constexpr int ACT_COLS = 0;
constexpr int ACT_FN = 1;
constexpr int EMUL_COLS = 0;
constexpr int EADD_COLS = 0;
constexpr int ESCALE_COLS = 0;
constexpr int ESCALE_VEC_OFF = 1;
constexpr int LNORM_COLS = 0;
constexpr int LNORM_WEIGHT_OFF = 1;
constexpr int LNORM_BIAS_OFF = 2;
constexpr int LNORM_EPS = 3;
constexpr int ROUTE_COLS = 0;
constexpr int ROUTE_TOP_K = 1;
constexpr int ROUTE_NORMALIZE = 2;
constexpr int XMM_N = 0;
constexpr int XMM_K = 1;
constexpr int XMM_GROUP = 2;
constexpr int XMM_SHIFT = 3;
constexpr int XMM_FLAGS = 4;
constexpr int XMM_WEIGHT_OFF = 5;
constexpr int XMM_TILE_BYTES = 6;
constexpr int XMM_ROW_BLOCK = 7;
constexpr int XMM_TILES = 8;
constexpr int XMM_IO_OFF = 9;
constexpr int XMM_CAP = 10;
constexpr int XMM_EXPERTS = 11;
constexpr int XMM_EXPERT_STRIDE = 12;
constexpr int XMM_SLOT = 13;
constexpr int WEIGH_COLS = 0;
constexpr int WEIGH_SLOT = 1;
constexpr int SEND_COLS = 0;
constexpr int SEND_IO_OFF = 1;
constexpr int RECV_COLS = 0;
constexpr int RECV_IO_OFF = 1;
constexpr int MM_FLAG_BITS_LSB = 0;
constexpr int MM_FLAG_BITS_WIDTH = 4;
constexpr int MM_FLAG_ENGINE_LSB = 4;
constexpr int MM_FLAG_ENGINE_WIDTH = 2;
constexpr int MM_FLAG_HAS_ZERO_LSB = 6;
constexpr int MM_FLAG_HAS_ZERO_WIDTH = 1;
constexpr int MM_FLAG_HAS_BIAS_LSB = 7;
constexpr int MM_FLAG_HAS_BIAS_WIDTH = 1;
constexpr int MM_FLAG_UNSIGNED_LSB = 8;
constexpr int MM_FLAG_UNSIGNED_WIDTH = 1;
constexpr int MM_FLAG_DOUBLE_BUFFER_LSB = 9;
constexpr int MM_FLAG_DOUBLE_BUFFER_WIDTH = 1;
constexpr int MM_FLAG_TO_IO_LSB = 10;
constexpr int MM_FLAG_TO_IO_WIDTH = 1;
constexpr int MM_FLAG_HALF_SCALES_LSB = 11;
constexpr int MM_FLAG_HALF_SCALES_WIDTH = 1;
constexpr int MM_FLAG_SPARSE_N_LSB = 12;
constexpr int MM_FLAG_SPARSE_N_WIDTH = 4;
constexpr int MM_FLAG_SPARSE_M_LSB = 16;
constexpr int MM_FLAG_SPARSE_M_WIDTH = 5;
constexpr int MM_FLAG_HAS_MIN_LSB = 21;
constexpr int MM_FLAG_HAS_MIN_WIDTH = 1;
constexpr int ACT_SILU = 0;
constexpr int ACT_RELU = 1;
constexpr int ACT_GELU_TANH = 2;
constexpr int ACT_GELU = 3;
constexpr int ENGINE_DSP = 0;
constexpr int ENGINE_SPARSE = 1;
constexpr int ENGINE_LUT = 2;
constexpr int COLS = 0;  // every opcode with a width has it first

inline int flag_field(uint32_t flags, int lsb, int width) { return (int)((flags >> lsb) & ((1u << width) - 1u)); }

struct Instr {
  int op, dst, src0, src1;
  uint32_t f[15];
};

static Instr fetch(const word_t* program, int pc) {
  const word_t w = program[pc];
  Instr in;
  const uint32_t head = (uint32_t)w.range(31, 0);
  in.op = head & 0xFF;
  in.dst = (head >> 8) & 0xFF;
  in.src0 = (head >> 16) & 0xFF;
  in.src1 = (head >> 24) & 0xFF;
  for (int i = 0; i < 15; ++i) {
#pragma HLS UNROLL
    in.f[i] = (uint32_t)w.range(32 * i + 63, 32 * i + 32);
  }
  return in;
}

// One read port per lane: lane i owns weight channel i.
static void read_lane(int lane, uint64_t off, uint8_t* dst, int n,
                      const port_t* w0,
                      const port_t* w1,
                      const port_t* w2,
                      const port_t* w3,
                      const port_t* w4,
                      const port_t* w5,
                      const port_t* w6,
                      const port_t* w7,
                      const port_t* w8,
                      const port_t* w9,
                      const port_t* w10,
                      const port_t* w11,
                      const port_t* w12,
                      const port_t* w13,
                      const port_t* w14,
                      const port_t* w15,
                      const port_t* w16,
                      const port_t* w17,
                      const port_t* w18,
                      const port_t* w19,
                      const port_t* w20,
                      const port_t* w21,
                      const port_t* w22,
                      const port_t* w23) {
  switch (lane) {
    case 0: read_bytes(w0, off, dst, n); break;
    case 1: read_bytes(w1, off, dst, n); break;
    case 2: read_bytes(w2, off, dst, n); break;
    case 3: read_bytes(w3, off, dst, n); break;
    case 4: read_bytes(w4, off, dst, n); break;
    case 5: read_bytes(w5, off, dst, n); break;
    case 6: read_bytes(w6, off, dst, n); break;
    case 7: read_bytes(w7, off, dst, n); break;
    case 8: read_bytes(w8, off, dst, n); break;
    case 9: read_bytes(w9, off, dst, n); break;
    case 10: read_bytes(w10, off, dst, n); break;
    case 11: read_bytes(w11, off, dst, n); break;
    case 12: read_bytes(w12, off, dst, n); break;
    case 13: read_bytes(w13, off, dst, n); break;
    case 14: read_bytes(w14, off, dst, n); break;
    case 15: read_bytes(w15, off, dst, n); break;
    case 16: read_bytes(w16, off, dst, n); break;
    case 17: read_bytes(w17, off, dst, n); break;
    case 18: read_bytes(w18, off, dst, n); break;
    case 19: read_bytes(w19, off, dst, n); break;
    case 20: read_bytes(w20, off, dst, n); break;
    case 21: read_bytes(w21, off, dst, n); break;
    case 22: read_bytes(w22, off, dst, n); break;
    case 23: read_bytes(w23, off, dst, n); break;
    default: break;
  }
}

static port_t* kv_port(int channel,
                       port_t* kv0,
                       port_t* kv1,
                       port_t* kv2,
                       port_t* kv3,
                       port_t* kv4,
                       port_t* kv5,
                       port_t* kv6,
                       port_t* kv7,
                       port_t* kv8,
                       port_t* kv9,
                       port_t* kv10,
                       port_t* kv11,
                       port_t* kv12,
                       port_t* kv13,
                       port_t* kv14,
                       port_t* kv15,
                       port_t* kv16,
                       port_t* kv17,
                       port_t* kv18,
                       port_t* kv19,
                       port_t* kv20,
                       port_t* kv21,
                       port_t* kv22,
                       port_t* kv23) {
  switch (channel) {
    case 1: return kv1;
    case 2: return kv2;
    case 3: return kv3;
    case 4: return kv4;
    case 5: return kv5;
    case 6: return kv6;
    case 7: return kv7;
    case 8: return kv8;
    case 9: return kv9;
    case 10: return kv10;
    case 11: return kv11;
    case 12: return kv12;
    case 13: return kv13;
    case 14: return kv14;
    case 15: return kv15;
    case 16: return kv16;
    case 17: return kv17;
    case 18: return kv18;
    case 19: return kv19;
    case 20: return kv20;
    case 21: return kv21;
    case 22: return kv22;
    case 23: return kv23;
    default: return kv0;
  }
}

// Activation buffers, kept on chip between instructions (banked by column: the matrix lanes write their
// tiles' columns in parallel, the SFU reads SFU_LANES columns per cycle).
static int32_t act[N_BUFFERS][MAX_ROWS][MAX_HIDDEN];

// The matrix engine's input: each row's int8 codes and scale (quantised once per MM, read by every lane), and for
// weights with minimums the sum of the row's codes over each group.
static int8_t xq[MAX_ROWS][MAX_HIDDEN];
static int32_t xs[MAX_ROWS];
static int32_t xsum[MAX_ROWS][MAX_SUM_GROUPS];

// One MM or XMM pass as its lanes see it: the tile layout, the output and the weights of this pass.
struct MmPass {
  int n, k, group, groups, shift, bits, engine, sp_n, sp_m, stored, count, chunk;
  int tile_bytes, tiles, code_words, part_words, zeros_at, mins_at, bias_at;
  bool has_zero, has_min, has_bias, is_signed, to_io, half_scales;
  float cap;
  int dst;
  uint64_t io_off, base;  // base: byte offset of the pass's first tile on every lane's channel
};

static MmPass mm_pass_of(const Instr& in) {
  MmPass p;
  const uint32_t flags = in.f[MM_FLAGS];
  p.n = in.f[MM_N];
  p.k = in.f[MM_K];
  p.group = in.f[MM_GROUP];
  p.groups = p.k / p.group;
  p.shift = in.f[MM_SHIFT];
  p.bits = flag_field(flags, MM_FLAG_BITS_LSB, MM_FLAG_BITS_WIDTH);
  p.engine = flag_field(flags, MM_FLAG_ENGINE_LSB, MM_FLAG_ENGINE_WIDTH);
  p.has_zero = flag_field(flags, MM_FLAG_HAS_ZERO_LSB, 1);
  p.has_min = flag_field(flags, MM_FLAG_HAS_MIN_LSB, 1);
  p.has_bias = flag_field(flags, MM_FLAG_HAS_BIAS_LSB, 1);
  p.is_signed = !flag_field(flags, MM_FLAG_UNSIGNED_LSB, 1);
  p.to_io = flag_field(flags, MM_FLAG_TO_IO_LSB, 1);
  p.half_scales = flag_field(flags, MM_FLAG_HALF_SCALES_LSB, 1);
  p.sp_n = flag_field(flags, MM_FLAG_SPARSE_N_LSB, MM_FLAG_SPARSE_N_WIDTH);
  p.sp_m = flag_field(flags, MM_FLAG_SPARSE_M_LSB, MM_FLAG_SPARSE_M_WIDTH);
  p.stored = p.bits > 4 ? 8 : 4;
  p.chunk = TILE_K < 512 / p.stored ? TILE_K : 512 / p.stored;  // codes a lane multiplies per cycle: one word at most
  p.count = p.engine == ENGINE_SPARSE ? TILE_N * (p.k / p.sp_m) * p.sp_n : TILE_N * p.k;
  const int code_bytes = p.engine == ENGINE_LUT ? p.bits * TILE_N * p.k / 8
                         : p.count * p.stored / 8 + (p.engine == ENGINE_SPARSE ? p.count / 2 : 0);
  const int scales_at = (code_bytes + 63) / 64 * 64;
  p.zeros_at = scales_at + (TILE_N * p.groups * (p.half_scales ? 2 : 4) + 63) / 64 * 64;
  p.mins_at = p.zeros_at + (p.has_zero ? (TILE_N * p.groups * 2 + 63) / 64 * 64 : 0);
  p.bias_at = p.mins_at + (p.has_min ? (TILE_N * p.groups * 4 + 63) / 64 * 64 : 0);
  p.tile_bytes = in.f[MM_TILE_BYTES];
  p.tiles = in.f[MM_TILES];
  p.code_words = scales_at / WORD_BYTES;
  p.part_words = (p.tile_bytes - scales_at) / WORD_BYTES;
  p.zeros_at -= scales_at;  // from here on: offsets into the tile's parts (scales first)
  p.mins_at -= scales_at;
  p.bias_at -= scales_at;
  p.cap = bits_to_float(in.f[MM_CAP]);  // logits soft-capping: tanh(v) * cap (its 1 / cap is in the weights)
  p.dst = in.dst;
  p.io_off = in.f[MM_IO_OFF];
  p.base = in.f[MM_WEIGHT_OFF];
  return p;
}

// The weight loaders run ahead of the control: once a lane's loader has streamed its tiles of an MM, it reads its
// first tile of the next MM into ahead[lane] when only SFU instructions (which leave the channels free) and
// readers of lane 0's channel (which wait for it) lie between; that MM's lane takes the tile from there.
static const int MAX_TILE_WORDS = MAX_TILE_BYTES / WORD_BYTES;
static word_t ahead[LANES][MAX_TILE_WORDS];
static int ahead_pc = -1;  // the MM whose first tiles the loaders hold
#ifndef __SYNTHESIS__
static uint64_t ahead_at[LANES][MAX_TILE_WORDS];  // C-simulation: the cycle each word came in
static uint64_t ahead_done[LANES];                 // and the cycle the lane's port was free again
#endif

// f32 vectors (norm weights and biases, scale vectors) are striped over the weight channels: lane l holds
// elements l * slice .. of a vector at its offset on every channel (slice: whole words), so the lanes read a
// vector together. Before the next MM's first tile, the loaders read the vectors of the first instruction
// between that reads any (a NORM's weights before the MM after it) into vec_ahead.
static const int MAX_VECTORS = 2;
struct Vectors {
  int pc, count, cols;  // the instruction, its vectors and their length
  uint64_t off[MAX_VECTORS];
};
static float vec_ahead[MAX_VECTORS][MAX_HIDDEN];
static int vec_ahead_pc = -1;  // the instruction whose vectors the loaders hold
#ifndef __SYNTHESIS__
static uint64_t vec_done[LANES];  // C-simulation: the cycle each lane's slices were in
#endif

static int vector_slice(int cols) { return ((cols + LANES - 1) / LANES + 15) / 16 * 16; }

// The elements of a vector of cols that lane holds.
static int vector_part(int cols, int lane) {
  const int rest = cols - lane * vector_slice(cols);
  return rest < 0 ? 0 : rest < vector_slice(cols) ? rest : vector_slice(cols);
}

// The tile word a lane streams w-th: the scales (zeros, bias) first, then the codes (stored first in the tile).
static int streamed_word(const MmPass& p, int w) { return w < p.part_words ? p.code_words + w : w - p.part_words; }

// The first of from, from + 1, ... that is `lane` modulo `lanes`: where lane (or channel) `lane` starts.
static int first_of_lane(int from, int lane, int lanes) { return from + ((lane - from % lanes) + lanes) % lanes; }

// A lane's weight loader: its tiles (t = lane, lane + LANES, ...) from its own channel, each as two bursts, the
// scales (zeros, bias) first and then the codes, one word per beat into the lane's FIFO; the first from
// ahead[lane] when the loader read it during the previous MM, and then on into the next MM's (`next`), after
// its slices of the `vectors` read before it.
static void load_lane(const port_t* port, const MmPass& p, int lane, timed_stream<word_t>& words, bool from_ahead,
                      const MmPass* next, const Vectors* vectors) {
  int first = lane;
  bool streaming = false;  // the port is still reading the tile ahead: the next requests queue behind it
  if (from_ahead && lane < p.tiles) {
    for (int w = 0; w < p.part_words + p.code_words; ++w) {
#ifndef __SYNTHESIS__
      words.write_at(ahead[lane][w], ahead_at[lane][w]);
#else
      words.write(ahead[lane][w]);
#endif
    }
#ifndef __SYNTHESIS__
    streaming = cycle_account() < ahead_done[lane];
    if (streaming) cycle_account() = ahead_done[lane];
#endif
    first += LANES;
  }
  if (first < p.tiles && !streaming) hbm_latency();
  PortClock clock;
  for (int t = first; t < p.tiles; t += LANES) {
    const uint64_t tile_word = (p.base + (uint64_t)(t / LANES) * p.tile_bytes) / WORD_BYTES;
    for (int w = 0; w < p.part_words + p.code_words; ++w) {
      LLMC_PIPELINE(LLMC_TRIP_TILE_WORDS);
      clock.beat();
      words.write(port_word(port, tile_word + streamed_word(p, w)));
    }
  }
  if (next != nullptr) {  // lane 0 always has a tile of it
#ifndef __SYNTHESIS__
    const uint64_t own_end = cycle_account();  // the region ends with the loader's own tiles
#endif
    hbm_latency();  // the vectors' and the tile's requests go out together
    const int part = vectors != nullptr ? vector_part(vectors->cols, lane) : 0;
    for (int v = 0; v < (vectors != nullptr ? vectors->count : 0); ++v) {
      const uint64_t first_word = vectors->off[v] / WORD_BYTES;
      for (int w = 0; w * 16 < part; ++w) {
        LLMC_PIPELINE(LLMC_TRIP_VECTOR_WORDS);
        clock.beat();
        const word_t word = port_word(port, first_word + w);
        for (int e = 0; e < 16 && w * 16 + e < part; ++e) {
          LLMC_UNROLL;
          vec_ahead[v][lane * vector_slice(vectors->cols) + w * 16 + e] = bits_to_float((uint32_t)word.range(32 * e + 31, 32 * e));
        }
      }
    }
#ifndef __SYNTHESIS__
    vec_done[lane] = cycle_account();
#endif
    if (lane < next->tiles) {
      const uint64_t tile_word = next->base / WORD_BYTES;
      for (int w = 0; w < next->part_words + next->code_words; ++w) {
        LLMC_PIPELINE(LLMC_TRIP_TILE_WORDS);
        clock.beat();
        ahead[lane][w] = port_word(port, tile_word + streamed_word(*next, w));
#ifndef __SYNTHESIS__
        ahead_at[lane][w] = cycle_account();
#endif
      }
    }
#ifndef __SYNTHESIS__
    ahead_done[lane] = cycle_account();
    cycle_account() = own_end;
#endif
  }
}

// A column's result for row r: requantised, biased, to its activation buffer or (logits) to io as float32.
static void finish_column(const MmPass& p, int32_t bias, int col, int r, int64_t total, uint8_t* io) {
  int32_t y = requantize(total, xs[r], p.shift);
  if (p.has_bias) y = saturate((int64_t)y + bias);
  if (p.to_io) {
    const float v = fixed_to_f32(y);
    store_u32(io + p.io_off + ((uint64_t)r * p.n + col) * 4, float_to_bits(p.cap != 0.0f ? tanh_f32(v) * p.cap : v));
  } else {
    act[p.dst][r][col] = y;
  }
}

// Row j's bias in a tile's parts (0 without).
static int32_t column_bias(const MmPass& p, const uint8_t* parts, int j) {
  return p.has_bias ? load_i32(parts + p.bias_at + j * 4) : 0;
}

// Row j's scale of group g in a tile's parts: int32, or its f16 value turned into the same integer.
static int64_t group_scale(const MmPass& p, const uint8_t* parts, int j, int g) {
  const int i = j * p.groups + g;
  return p.half_scales ? half_scale((uint16_t)load_i16(parts + 2 * i), p.shift) : (int64_t)load_i32(parts + 4 * i);
}

// Row j's minimum of group g times row r's sum of activation codes over the group (0 without minimums).
static int64_t group_min(const MmPass& p, const uint8_t* parts, int j, int g, int r) {
  return p.has_min ? (int64_t)load_i32(parts + p.mins_at + 4 * (j * p.groups + g)) * xsum[r][g] : 0;
}

// A tile's parts (scales, zeros, minimums, bias) from the lane's FIFO into its register file.
static void read_parts(const MmPass& p, timed_stream<word_t>& words, uint8_t* parts) {
  for (int w = 0; w < p.part_words; ++w) {
    LLMC_PIPELINE(LLMC_TRIP_TILE_WORDS);
    word_bytes(words.read(), parts + w * WORD_BYTES);
  }
}

// Code q of the DSP layout (int8 bytes, or int4 nibbles low first) from the word that holds it.
static int code_at(const word_t& word, int q, int stored, bool is_signed) {
  const int bit = (q * stored) % 512;
  int v = (int)word.range(bit + stored - 1, bit);
  if (is_signed && v >= (1 << (stored - 1))) v -= 1 << stored;
  return v;
}

// A lane's DSP MAC array: per cycle, `chunk` codes of one column (at most TILE_K, at most one word) against one
// row's activation codes, split at group boundaries, each group's sum times its scale, less its minimum times the
// group's activation sum where the group ends; int4 codes two per DSP.
// The codes stream in the order they are stored; a chunk's word is read once and used for every row of the block.
static void mac_lane(const MmPass& p, int lane, const int* chosen, int r0, int r1, timed_stream<word_t>& words,
                     uint8_t* io) {
  static uint8_t parts[MAX_TILE_BYTES];
  static int64_t total[MAX_ROWS];
  for (int t = lane; t < p.tiles; t += LANES) {
    read_parts(p, words, parts);
    word_t held = 0, prev = 0;  // the newest word read and the one before it (a chunk spans at most two)
    int held_index = -1;
    for (int j = 0; j < TILE_N; ++j) {
      const int col = t * TILE_N + j;
      for (int pos = 0; pos < p.k; pos += p.chunk) {
        const int len = p.chunk < p.k - pos ? p.chunk : p.k - pos;
        const int64_t first = (int64_t)j * p.k + pos;  // the chunk's first code in the tile
        int8_t codes[TILE_K];
        for (int i = r0; i < r1; ++i) {
          LLMC_PIPELINE(LLMC_TRIP_ROWS);
          if (i == r0) {
            const int last_word = (int)(((first + len) * p.stored / 8 - 1) / WORD_BYTES);
            if (last_word > held_index) {
              prev = held;
              held = words.read();
              ++held_index;
            }
            for (int c = 0; c < TILE_K; ++c) {
              LLMC_UNROLL;
              if (c < len) {
                const int64_t q = first + c;
                const bool in_held = (int)(q * p.stored / 8 / WORD_BYTES) == held_index;
                codes[c] = (int8_t)code_at(in_held ? held : prev, (int)(q % (512 / p.stored)), p.stored, p.is_signed);
              }
            }
          }
          const int r = chosen[i];
          if (pos == 0) total[i] = 0;
          int64_t sum = 0, segment = 0;
          int g = pos / p.group;
          for (int c = 0; c < TILE_K; c += 2) {  // a pair of products per DSP48E2 slice (groups are even)
            LLMC_UNROLL;
            if (c < len) {
              if ((pos + c) / p.group != g) {  // a group ends in the chunk: its sum times its scale, less its minimum
                sum += segment * group_scale(p, parts, j, g) - group_min(p, parts, j, g, r);
                segment = 0;
                g = (pos + c) / p.group;
              }
              const int zero = p.has_zero ? load_i16(parts + p.zeros_at + (j * p.groups + g) * 2) : 0;
              const int32_t xa = xq[r][pos + c], wa = codes[c] - zero;
              const int32_t xb = c + 1 < len ? xq[r][pos + c + 1] : 0, wb = c + 1 < len ? codes[c + 1] - zero : 0;
              // int4 codes (less a 4-bit zero point): both products from one 27x18 multiply, as the sparse chain
              segment += p.stored == 4 ? (int64_t)dsp_pair(xa, wa, xb, wb) : (int64_t)xa * wa + (int64_t)xb * wb;
            }
          }
          const bool ends = (pos + len) % p.group == 0;  // the chunk ends group g
          total[i] += sum + segment * group_scale(p, parts, j, g) - (ends ? group_min(p, parts, j, g, r) : 0);
          if (pos + len == p.k && col < p.n) finish_column(p, column_bias(p, parts, j), col, r, total[i], io);
        }
      }
    }
  }
}

// One pass of an MM over the rows chosen[r0..r1) as a dataflow region: every lane's loader streams its tiles
// from its channel while the lane's MAC array (or its tile buffer, then its RTL unit) consumes them; the MAC
// arrays and units start once the rows' activation codes are ready.
static void mm_pass(const MmPass& p, const int* chosen, int r0, int r1, uint64_t inputs_ready, bool from_ahead,
                    const MmPass* next, const Vectors* vectors, uint8_t* io,
                    const port_t* w0,
                    const port_t* w1,
                    const port_t* w2,
                    const port_t* w3,
                    const port_t* w4,
                    const port_t* w5,
                    const port_t* w6,
                    const port_t* w7,
                    const port_t* w8,
                    const port_t* w9,
                    const port_t* w10,
                    const port_t* w11,
                    const port_t* w12,
                    const port_t* w13,
                    const port_t* w14,
                    const port_t* w15,
                    const port_t* w16,
                    const port_t* w17,
                    const port_t* w18,
                    const port_t* w19,
                    const port_t* w20,
                    const port_t* w21,
                    const port_t* w22,
                    const port_t* w23) {
#pragma HLS DATAFLOW
  static timed_stream<word_t> words[LANES];
  Region region;
  region.begin();
  load_lane(w0, p, 0, words[0], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w1, p, 1, words[1], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w2, p, 2, words[2], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w3, p, 3, words[3], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w4, p, 4, words[4], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w5, p, 5, words[5], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w6, p, 6, words[6], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w7, p, 7, words[7], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w8, p, 8, words[8], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w9, p, 9, words[9], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w10, p, 10, words[10], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w11, p, 11, words[11], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w12, p, 12, words[12], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w13, p, 13, words[13], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w14, p, 14, words[14], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w15, p, 15, words[15], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w16, p, 16, words[16], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w17, p, 17, words[17], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w18, p, 18, words[18], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w19, p, 19, words[19], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w20, p, 20, words[20], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w21, p, 21, words[21], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w22, p, 22, words[22], from_ahead, next, vectors);
  region.end();
  region.begin();
  load_lane(w23, p, 23, words[23], from_ahead, next, vectors);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 0, chosen, r0, r1, words[0], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 1, chosen, r0, r1, words[1], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 2, chosen, r0, r1, words[2], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 3, chosen, r0, r1, words[3], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 4, chosen, r0, r1, words[4], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 5, chosen, r0, r1, words[5], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 6, chosen, r0, r1, words[6], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 7, chosen, r0, r1, words[7], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 8, chosen, r0, r1, words[8], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 9, chosen, r0, r1, words[9], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 10, chosen, r0, r1, words[10], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 11, chosen, r0, r1, words[11], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 12, chosen, r0, r1, words[12], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 13, chosen, r0, r1, words[13], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 14, chosen, r0, r1, words[14], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 15, chosen, r0, r1, words[15], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 16, chosen, r0, r1, words[16], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 17, chosen, r0, r1, words[17], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 18, chosen, r0, r1, words[18], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 19, chosen, r0, r1, words[19], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 20, chosen, r0, r1, words[20], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 21, chosen, r0, r1, words[21], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 22, chosen, r0, r1, words[22], io);
  region.end();
  region.begin();
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
  mac_lane(p, 23, chosen, r0, r1, words[23], io);
  region.end();
}

// Each row's input as int8 codes with one scale (quant8 over the row), on the SFU: two passes of SFU_LANES
// elements per cycle (the maximum, then the codes); for weights with minimums (sum_group: their group) the codes
// pass also adds up each group's codes.
static void quantise_rows(const int32_t x[MAX_ROWS][MAX_HIDDEN], int rows, int k, int sum_group) {
  for (int r = 0; r < rows; ++r) quant8(x[r], k, k, xq[r], &xs[r], sum_group, xsum[r]);
}

// Instructions that leave the weight channels free, and those that read lane 0's channel (a weight vector or a
// table: they wait for lane 0's read-ahead); llmc/backends/fpga/timing.py lists both.
static bool sfu_only(int op) { return op == ACT || op == EMUL || op == EADD || op == WEIGH || op == ROUTE; }
static bool reads_lane0(int op) { return op == NORM || op == LNORM || op == ESCALE || op == ROPE; }

// The MM the weight loaders may read ahead for after the instruction at pc: the next one, when only SFU
// instructions and readers of lane 0's channel lie between (-1: none).
static int next_matmul(const word_t* program, int pc, int n_instr) {
  for (int q = pc + 1; q < n_instr; ++q) {
    const int op = fetch(program, q).op;
    if (op == MM) return q;
    if (!sfu_only(op) && !reads_lane0(op)) return -1;
  }
  return -1;
}

// The vectors of the first instruction between pc and next_pc that reads any (count 0: none).
static Vectors vectors_between(const word_t* program, int pc, int next_pc) {
  Vectors v;
  v.pc = -1;
  v.count = v.cols = 0;
  for (int q = pc + 1; q < next_pc && v.count == 0; ++q) {
    const Instr in = fetch(program, q);
    if (in.op != NORM && in.op != LNORM && in.op != ESCALE) continue;
    v.pc = q;
    v.cols = in.f[COLS];
    v.off[v.count++] = in.op == NORM ? in.f[NORM_WEIGHT_OFF] : in.op == LNORM ? in.f[LNORM_WEIGHT_OFF] : in.f[ESCALE_VEC_OFF];
    if (in.op == LNORM) v.off[v.count++] = in.f[LNORM_BIAS_OFF];
  }
  return v;
}

static void matmul(const Instr& in, int pc, int next_pc, const word_t* program, int rows, uint8_t* io,
                   const port_t* w0,
                   const port_t* w1,
                   const port_t* w2,
                   const port_t* w3,
                   const port_t* w4,
                   const port_t* w5,
                   const port_t* w6,
                   const port_t* w7,
                   const port_t* w8,
                   const port_t* w9,
                   const port_t* w10,
                   const port_t* w11,
                   const port_t* w12,
                   const port_t* w13,
                   const port_t* w14,
                   const port_t* w15,
                   const port_t* w16,
                   const port_t* w17,
                   const port_t* w18,
                   const port_t* w19,
                   const port_t* w20,
                   const port_t* w21,
                   const port_t* w22,
                   const port_t* w23) {
  MmPass p = mm_pass_of(in);
  MmPass next_pass;
  if (next_pc >= 0) next_pass = mm_pass_of(fetch(program, next_pc));
  const Vectors vectors = vectors_between(program, pc, next_pc);
  bool from_ahead = ahead_pc == pc;
  const bool by_expert = in.op == XMM;  // row r uses expert act[src1][r][2 slot], its tiles expert_stride apart
  const int experts = by_expert ? (int)in.f[XMM_EXPERTS] : 1, slot = in.f[XMM_SLOT];
  const uint64_t expert_stride = in.f[XMM_EXPERT_STRIDE];
  const int row_block = in.f[MM_ROW_BLOCK];
  const uint64_t weight_off = p.base;
  static int chosen[MAX_ROWS];  // the rows of the current expert (every row for MM)
  const uint64_t start = cycle_account();
  quantise_rows(act[in.src0], rows, p.k, p.has_min ? p.group : 0);
  const uint64_t inputs_ready = cycle_account();
  cycle_account() = start;  // the loaders start with the quantisation, in the same dataflow region
  for (int e = 0; e < experts; ++e) {  // each chosen expert streams once, for all its rows
    int picked = 0;
    for (int r = 0; r < rows; ++r) {
      if (!by_expert || act[in.src1][r][2 * slot] == e) chosen[picked++] = r;
    }
    p.base = weight_off + (uint64_t)e * expert_stride;
    for (int r0 = 0; r0 < picked; r0 += row_block) {
      const int r1 = r0 + row_block < picked ? r0 + row_block : picked;
      const bool last = e == experts - 1 && r1 == picked;
      mm_pass(p, chosen, r0, r1, inputs_ready, from_ahead, last && next_pc >= 0 ? &next_pass : nullptr,
              last && vectors.count > 0 ? &vectors : nullptr, io,
              w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, w12, w13, w14, w15, w16, w17, w18, w19, w20, w21, w22, w23);
      from_ahead = false;
    }
  }
  ahead_pc = next_pc;
  vec_ahead_pc = vectors.pc;
  if (cycle_account() < inputs_ready) cycle_account() = inputs_ready;
}

// Rows first..s-1 of one KV channel (row j lives on channel j % KV_CHANNELS, at row j / KV_CHANNELS there), n bytes
// at byte offset at of each, into dst at dst_stride bytes a row: one transaction a row, in row order (a single
// sequential stream when the rows are contiguous in memory).
static void read_kv_rows(port_t* port, uint64_t base, uint64_t row_bytes, uint64_t at, int n, int channel, int first,
                         int s, uint8_t* dst, int dst_stride) {
  for (int j = first_of_lane(first, channel, KV_CHANNELS); j < s; j += KV_CHANNELS) {
    read_bytes(port, base + (uint64_t)(j / KV_CHANNELS) * row_bytes + at, dst + (uint64_t)j * dst_stride, n);
  }
}

// The int32 scales of KV heads h0..h0+g-1 in rows first..s-1 of one KV channel, from the scale rows at base
// (kv_heads scales a row): key j of head h0+e lands at out[j * g + e].
static void read_kv_scales(port_t* port, uint64_t base, int kv_heads, int h0, int g, int channel, int first, int s,
                           int32_t* out) {
  static uint8_t scales[MAX_CONTEXT * KV_GROUP * 4];
  read_kv_rows(port, base, (uint64_t)kv_heads * 4, (uint64_t)h0 * 4, g * 4, channel, first, s, scales, g * 4);
  for (int j = first_of_lane(first, channel, KV_CHANNELS); j < s; j += KV_CHANNELS) {
    for (int e = 0; e < g; ++e) out[j * g + e] = load_i32(&scales[(j * g + e) * 4]);  // wiring
  }
}

// One KV channel's share of the cache rows first..s-1 of KV heads h0..h0+g-1, whose codes (and scales) lie side
// by side in a row: the K codes of every row, then the V codes, then each scale, as the channel's loader streams
// them. Key j of head h0+e lands at kc[(j * g + e) * d] (its scale at ks[j * g + e]).
static void load_kv_channel(port_t* port, const Instr& in, int channel, int h0, int g, int first, int s, int8_t* kc,
                            int8_t* vc, int32_t* ks, int32_t* vs) {
  const int kv_heads = in.f[ATTN_KV_HEADS], d = in.f[ATTN_HEAD_DIM];
  const uint64_t width = (uint64_t)kv_heads * d;
  hbm_latency();
  read_kv_rows(port, in.f[ATTN_K_CODES_OFF], width, (uint64_t)h0 * d, g * d, channel, first, s, (uint8_t*)kc, g * d);
  read_kv_rows(port, in.f[ATTN_V_CODES_OFF], width, (uint64_t)h0 * d, g * d, channel, first, s, (uint8_t*)vc, g * d);
  read_kv_scales(port, in.f[ATTN_K_SCALES_OFF], kv_heads, h0, g, channel, first, s, ks);
  read_kv_scales(port, in.f[ATTN_V_SCALES_OFF], kv_heads, h0, g, channel, first, s, vs);
}

// Attention of one query row and head on the matrix lanes: lane l takes the keys j = l (mod LANES) of from..visible-1,
// key j's codes at kc[j * g * d] and vc[j * g * d], its scales at ks[j * g] and vs[j * g] (g heads side by side).
// Pass 1 (a region of LANES processes): each key's score, d MACs (TILE_K per cycle); the maximum over the lanes.
// Pass 2: each key's weight and its d-wide weighted value, summed per lane, then over the lanes (exact integers).
static void attention_head(const int8_t* qc, int32_t qs, const int8_t* kc, const int32_t* ks, const int8_t* vc,
                           const int32_t* vs, int g, int from, int visible, int d, float scale, float softcap,
                           int32_t* out) {
  static float scores[MAX_CONTEXT];
  static int64_t acc[LANES][MAX_HEAD_DIM];
  static int64_t den[LANES];
  const float c = scale * (1.0f / 4294967296.0f);
  float peak = -INFINITY;
  {
    Region region;
    for (int lane = 0; lane < LANES; ++lane) {
      region.begin();
      for (int j = first_of_lane(from, lane, LANES); j < visible; j += LANES) {
        int64_t dot = 0;
        for (int i0 = 0; i0 < d; i0 += TILE_K) {  // TILE_K MACs a cycle
          LLMC_PIPELINE(LLMC_TRIP_HEAD_CHUNKS);
          for (int i = i0; i < i0 + TILE_K && i < d; ++i) {
            LLMC_UNROLL;
            dot += (int64_t)qc[i] * kc[j * g * d + i];
          }
        }
        scores[j] = attention_score(dot, qs, ks[j * g], c, softcap);
        if (scores[j] > peak) peak = scores[j];
      }
      region.end();
    }
  }
  {
    Region region;
    for (int lane = 0; lane < LANES; ++lane) {
      region.begin();
      den[lane] = 0;
      for (int i = 0; i < d; ++i) {
        LLMC_UNROLL;
        acc[lane][i] = 0;
      }
      for (int j = first_of_lane(from, lane, LANES); j < visible; j += LANES) {
        const int64_t ei = attention_weight(scores[j], peak);
        den[lane] += ei;
        for (int i0 = 0; i0 < d; i0 += TILE_K) {  // TILE_K MACs a cycle
          LLMC_PIPELINE(LLMC_TRIP_HEAD_CHUNKS);
          for (int i = i0; i < i0 + TILE_K && i < d; ++i) {
            LLMC_UNROLL;
            acc[lane][i] += ei * ((int64_t)vc[j * g * d + i] * vs[j * g]);
          }
        }
      }
      region.end();
    }
  }
  int64_t total_den = 0;
  for (int lane = 0; lane < LANES; ++lane) {
    LLMC_UNROLL;
    total_den += den[lane];
  }
  for (int i0 = 0; i0 < d; i0 += SFU_LANES) {  // the lanes' sums added and divided, SFU_LANES columns per cycle
    LLMC_PIPELINE(LLMC_TRIP_HEAD_SFU);
    for (int i = i0; i < i0 + SFU_LANES && i < d; ++i) {
      LLMC_UNROLL;
      int64_t sum = 0;
      for (int lane = 0; lane < LANES; ++lane) sum += acc[lane][i];
      out[i] = attention_output(sum, total_den);
    }
  }
}

// KV heads h0.. (a group, KV_GROUP at most) of cache rows first..s-1 into one half of the ping-pong buffers, every KV
// channel's loader at once.
static void load_kv_group(const Instr& in, int h0, int first, int s, int8_t* kc, int8_t* vc, int32_t* ks, int32_t* vs,
                          port_t* kv0,
                          port_t* kv1,
                          port_t* kv2,
                          port_t* kv3,
                          port_t* kv4,
                          port_t* kv5,
                          port_t* kv6,
                          port_t* kv7,
                          port_t* kv8,
                          port_t* kv9,
                          port_t* kv10,
                          port_t* kv11,
                          port_t* kv12,
                          port_t* kv13,
                          port_t* kv14,
                          port_t* kv15,
                          port_t* kv16,
                          port_t* kv17,
                          port_t* kv18,
                          port_t* kv19,
                          port_t* kv20,
                          port_t* kv21,
                          port_t* kv22,
                          port_t* kv23) {
  const int kv_heads = in.f[ATTN_KV_HEADS];
  const int g = kv_heads - h0 < KV_GROUP ? kv_heads - h0 : KV_GROUP;
  Region region;
  region.begin();
  load_kv_channel(kv0, in, 0, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv1, in, 1, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv2, in, 2, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv3, in, 3, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv4, in, 4, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv5, in, 5, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv6, in, 6, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv7, in, 7, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv8, in, 8, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv9, in, 9, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv10, in, 10, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv11, in, 11, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv12, in, 12, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv13, in, 13, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv14, in, 14, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv15, in, 15, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv16, in, 16, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv17, in, 17, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv18, in, 18, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv19, in, 19, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv20, in, 20, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv21, in, 21, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv22, in, 22, h0, g, first, s, kc, vc, ks, vs);
  region.end();
  region.begin();
  load_kv_channel(kv23, in, 23, h0, g, first, s, kc, vc, ks, vs);
  region.end();
}

static void attention(const Instr& in, int rows, int start_pos,
                      port_t* kv0,
                      port_t* kv1,
                      port_t* kv2,
                      port_t* kv3,
                      port_t* kv4,
                      port_t* kv5,
                      port_t* kv6,
                      port_t* kv7,
                      port_t* kv8,
                      port_t* kv9,
                      port_t* kv10,
                      port_t* kv11,
                      port_t* kv12,
                      port_t* kv13,
                      port_t* kv14,
                      port_t* kv15,
                      port_t* kv16,
                      port_t* kv17,
                      port_t* kv18,
                      port_t* kv19,
                      port_t* kv20,
                      port_t* kv21,
                      port_t* kv22,
                      port_t* kv23) {
  const int heads = in.f[ATTN_HEADS], kv_heads = in.f[ATTN_KV_HEADS], d = in.f[ATTN_HEAD_DIM];
  const float scale = bits_to_float(in.f[ATTN_SCALE]);
  const int window = in.f[ATTN_WINDOW];  // 0: every row up to the query's position; else only the last window of them
  const float softcap = bits_to_float(in.f[ATTN_SOFTCAP]);  // 0: none; else scores become tanh(s / softcap) * softcap
  const int s = start_pos + rows;
  const int first = window > 0 && start_pos + 1 > window ? start_pos + 1 - window : 0;  // row 0's first key
  // ping-pong: group i's heads in half i % 2 while the next group loads into the other half
  static int8_t kc[2][MAX_CONTEXT * KV_GROUP * MAX_HEAD_DIM], vc[2][MAX_CONTEXT * KV_GROUP * MAX_HEAD_DIM];
  static int32_t ks[2][MAX_CONTEXT * KV_GROUP], vs[2][MAX_CONTEXT * KV_GROUP];
  static int8_t qc[MAX_ROWS][MAX_HEADS * MAX_HEAD_DIM];
  static int32_t qs[MAX_ROWS][MAX_HEADS];
  for (int t = 0; t < rows; ++t) quant8(act[in.src0][t], heads * d, d, qc[t], qs[t]);  // per head, on the SFU
  const int groups = (kv_heads + KV_GROUP - 1) / KV_GROUP;  // KV heads loaded together
  load_kv_group(in, 0, first, s, kc[0], vc[0], ks[0], vs[0], kv0, kv1, kv2, kv3, kv4, kv5, kv6, kv7, kv8, kv9, kv10, kv11, kv12, kv13, kv14, kv15, kv16, kv17, kv18, kv19, kv20, kv21, kv22, kv23);
  for (int i = 0; i < groups; ++i) {
    const int h0 = i * KV_GROUP, g = kv_heads - h0 < KV_GROUP ? kv_heads - h0 : KV_GROUP;
    const int half = i % 2;
    Region overlap;  // the next group's loads beside this group's scores
    overlap.begin();
    if (i + 1 < groups) {
      load_kv_group(in, h0 + KV_GROUP, first, s, kc[1 - half], vc[1 - half], ks[1 - half], vs[1 - half],
                    kv0, kv1, kv2, kv3, kv4, kv5, kv6, kv7, kv8, kv9, kv10, kv11, kv12, kv13, kv14, kv15, kv16, kv17, kv18, kv19, kv20, kv21, kv22, kv23);
    }
    overlap.end();
    overlap.begin();
    for (int e = 0; e < g; ++e) {
      const int h = h0 + e;
      for (int t = 0; t < rows; ++t) {
        for (int qh = h * (heads / kv_heads); qh < (h + 1) * (heads / kv_heads); ++qh) {
          const int visible = start_pos + t + 1;
          const int from = window > 0 && visible > window ? visible - window : 0;
          attention_head(&qc[t][qh * d], qs[t][qh], &kc[half][e * d], &ks[half][e], &vc[half][e * d], &vs[half][e], g,
                         from, visible, d, scale, softcap, &act[in.dst][t][qh * d]);
        }
      }
    }
    overlap.end();
  }
}

// Rows start_pos.. of src0 into the KV cache: per row, the SFU quantises each head to int8 while the row's KV channel
// writes the codes done so far (a dataflow region), then the row's scales.
static void kv_append(const Instr& in, int rows, int start_pos,
                      port_t* kv0,
                      port_t* kv1,
                      port_t* kv2,
                      port_t* kv3,
                      port_t* kv4,
                      port_t* kv5,
                      port_t* kv6,
                      port_t* kv7,
                      port_t* kv8,
                      port_t* kv9,
                      port_t* kv10,
                      port_t* kv11,
                      port_t* kv12,
                      port_t* kv13,
                      port_t* kv14,
                      port_t* kv15,
                      port_t* kv16,
                      port_t* kv17,
                      port_t* kv18,
                      port_t* kv19,
                      port_t* kv20,
                      port_t* kv21,
                      port_t* kv22,
                      port_t* kv23) {
  const int kv_heads = in.f[KVAPP_KV_HEADS], d = in.f[KVAPP_HEAD_DIM];
  const int width = kv_heads * d;
  static int8_t codes[MAX_HIDDEN];
  static int32_t scales[MAX_HEADS];
  static uint8_t bytes[MAX_HEADS * 4];
  static uint64_t done[MAX_HEADS];
  hbm_latency();
  for (int t = 0; t < rows; ++t) {
    const int j = start_pos + t;
    port_t* port = kv_port(j % KV_CHANNELS, kv0, kv1, kv2, kv3, kv4, kv5, kv6, kv7, kv8, kv9, kv10, kv11, kv12, kv13, kv14, kv15, kv16, kv17, kv18, kv19, kv20, kv21, kv22, kv23);
    const uint64_t at = j / KV_CHANNELS;
    {
      Region region;
      region.begin();
      for (int h = 0; h < kv_heads; ++h) {
        quant8(&act[in.src0][t][h * d], d, d, &codes[h * d], &scales[h]);
#ifndef __SYNTHESIS__
        done[h] = cycle_account();
#endif
      }
      region.end();
      region.begin();
      write_bytes(port, in.f[KVAPP_CODES_OFF] + at * width, (const uint8_t*)codes, width, done, d);
      region.end();
    }
    for (int h = 0; h < kv_heads; ++h) store_u32(&bytes[h * 4], (uint32_t)scales[h]);
    write_bytes(port, in.f[KVAPP_SCALES_OFF] + at * kv_heads * 4, bytes, kv_heads * 4);
  }
}

static void read_vec(const port_t* w0, uint64_t off, int n, uint8_t* raw) { read_bytes(w0, off, raw, n * 4); }

// The `count` striped vectors of cols at off[] of the instruction at pc into dst[]: as the loaders read them ahead
// (once every lane's slices are in; the engine reads vec_ahead in place), or now, each lane its slices at once.
static void read_vectors(int pc, int count, const uint64_t* off, int cols, float* const* dst,
                         const port_t* w0,
                         const port_t* w1,
                         const port_t* w2,
                         const port_t* w3,
                         const port_t* w4,
                         const port_t* w5,
                         const port_t* w6,
                         const port_t* w7,
                         const port_t* w8,
                         const port_t* w9,
                         const port_t* w10,
                         const port_t* w11,
                         const port_t* w12,
                         const port_t* w13,
                         const port_t* w14,
                         const port_t* w15,
                         const port_t* w16,
                         const port_t* w17,
                         const port_t* w18,
                         const port_t* w19,
                         const port_t* w20,
                         const port_t* w21,
                         const port_t* w22,
                         const port_t* w23) {
  if (vec_ahead_pc == pc) {
#ifndef __SYNTHESIS__
    for (int l = 0; l < LANES; ++l) {
      if (cycle_account() < vec_done[l]) cycle_account() = vec_done[l];
    }
#endif
    for (int v = 0; v < count; ++v) {
      for (int c = 0; c < cols; ++c) dst[v][c] = vec_ahead[v][c];
    }
    return;
  }
  static uint8_t raw[MAX_HIDDEN * 4];
  Region region;
  for (int l = 0; l < LANES; ++l) {
    region.begin();
    const int part = vector_part(cols, l);
    if (part > 0) {
      hbm_latency();
      for (int v = 0; v < count; ++v) {
        read_lane(l, off[v], raw, part * 4, w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, w12, w13, w14, w15, w16, w17, w18, w19, w20, w21, w22, w23);
        for (int i = 0; i < part; ++i) dst[v][l * vector_slice(cols) + i] = bits_to_float(load_u32(raw + 4 * i));  // as the words arrive
      }
    }
    region.end();
  }
}

}  // namespace llmc

using namespace llmc;

extern "C" void llmc_accel(
    const word_t* program,
    const port_t* w0,
    const port_t* w1,
    const port_t* w2,
    const port_t* w3,
    const port_t* w4,
    const port_t* w5,
    const port_t* w6,
    const port_t* w7,
    const port_t* w8,
    const port_t* w9,
    const port_t* w10,
    const port_t* w11,
    const port_t* w12,
    const port_t* w13,
    const port_t* w14,
    const port_t* w15,
    const port_t* w16,
    const port_t* w17,
    const port_t* w18,
    const port_t* w19,
    const port_t* w20,
    const port_t* w21,
    const port_t* w22,
    const port_t* w23,
    port_t* kv0,
    port_t* kv1,
    port_t* kv2,
    port_t* kv3,
    port_t* kv4,
    port_t* kv5,
    port_t* kv6,
    port_t* kv7,
    port_t* kv8,
    port_t* kv9,
    port_t* kv10,
    port_t* kv11,
    port_t* kv12,
    port_t* kv13,
    port_t* kv14,
    port_t* kv15,
    port_t* kv16,
    port_t* kv17,
    port_t* kv18,
    port_t* kv19,
    port_t* kv20,
    port_t* kv21,
    port_t* kv22,
    port_t* kv23,
    port_t* io,
    int n_instr,
    int seq_len,
    int start_pos,
    int first_instr
) {
#pragma HLS INTERFACE m_axi port = program bundle = gmem_prog offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w0 bundle = gmem_w0 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w1 bundle = gmem_w1 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w2 bundle = gmem_w2 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w3 bundle = gmem_w3 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w4 bundle = gmem_w4 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w5 bundle = gmem_w5 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w6 bundle = gmem_w6 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w7 bundle = gmem_w7 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w8 bundle = gmem_w8 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w9 bundle = gmem_w9 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w10 bundle = gmem_w10 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w11 bundle = gmem_w11 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w12 bundle = gmem_w12 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w13 bundle = gmem_w13 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w14 bundle = gmem_w14 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w15 bundle = gmem_w15 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w16 bundle = gmem_w16 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w17 bundle = gmem_w17 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w18 bundle = gmem_w18 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w19 bundle = gmem_w19 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w20 bundle = gmem_w20 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w21 bundle = gmem_w21 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w22 bundle = gmem_w22 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w23 bundle = gmem_w23 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv0 bundle = gmem_w0 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv1 bundle = gmem_w1 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv2 bundle = gmem_w2 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv3 bundle = gmem_w3 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv4 bundle = gmem_w4 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv5 bundle = gmem_w5 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv6 bundle = gmem_w6 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv7 bundle = gmem_w7 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv8 bundle = gmem_w8 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv9 bundle = gmem_w9 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv10 bundle = gmem_w10 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv11 bundle = gmem_w11 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv12 bundle = gmem_w12 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv13 bundle = gmem_w13 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv14 bundle = gmem_w14 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv15 bundle = gmem_w15 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv16 bundle = gmem_w16 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv17 bundle = gmem_w17 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv18 bundle = gmem_w18 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv19 bundle = gmem_w19 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv20 bundle = gmem_w20 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv21 bundle = gmem_w21 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv22 bundle = gmem_w22 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv23 bundle = gmem_w23 offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = io bundle = gmem_io offset = slave max_read_burst_length = 32 num_read_outstanding = 16 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE s_axilite port = n_instr
#pragma HLS INTERFACE s_axilite port = seq_len
#pragma HLS INTERFACE s_axilite port = start_pos
#pragma HLS INTERFACE s_axilite port = first_instr
#pragma HLS INTERFACE s_axilite port = return
#pragma HLS BIND_STORAGE variable = act type = ram_2p impl = uram
  static uint8_t io_buf[25088];
  static uint8_t raw[MAX_HIDDEN * 4 * 2];
  static float vec[MAX_HIDDEN];
  static float bias[MAX_HIDDEN];
  static int32_t cs[MAX_HEAD_DIM], sn[MAX_HEAD_DIM];
  const int rows = seq_len;
#ifndef __SYNTHESIS__
  port_model().extra_q16 = WORD_EXTRA_Q16;
  port_model().read_gap_q16 = READ_GAP_Q16;
  port_model().write_gap_q16 = WRITE_GAP_Q16;
  port_model().latency = HBM_LATENCY;
#endif
  hbm_latency();
  read_bytes(io, 0, io_buf + 0, 4 * rows);  // the rows' token ids
  uint64_t io_from = 0, io_to = 0;  // the logits the call wrote into io_buf
  ahead_pc = vec_ahead_pc = -1;  // what was read ahead in the previous call belongs to another program or segment
  // A call runs from first_instr to HALT, or to SYNC: the end of a cluster card's segment, after which
  // the host moves what the cards sent and calls again from the instruction after the SYNC.
  for (int pc = first_instr; pc < n_instr; ++pc) {
    const Instr in = fetch(program, pc);
    if (in.op == HALT || in.op == SYNC) break;
#ifndef __SYNTHESIS__
    const uint64_t account_before = cycle_account();
#endif
    loop_depth(INSTR_DEPTH);
#ifndef __SYNTHESIS__
    if (ahead_pc >= 0 && reads_lane0(in.op) && vec_ahead_pc != pc && cycle_account() < ahead_done[0]) {
      cycle_account() = ahead_done[0];  // the ports are still reading ahead: this read queues behind them
    }
#endif
    const int cols = in.f[COLS];
    const int elements = rows * cols;  // the SFU's instructions: SFU_LANES of a row-major rows x cols per cycle
    switch (in.op) {
      case EMBED: {
        const int row_bytes = (cols * 2 + 63) / 64 * 64;
        hbm_latency();
        for (int t = 0; t < rows; ++t) {
          const int id = (in.f[EMBED_BY_POSITION] ? start_pos + t : load_i32(io_buf + 0 + 4 * t)) + (int)in.f[EMBED_OFFSET];
          read_lane(id % LANES, in.f[EMBED_TABLE_OFF] + (uint64_t)(id / LANES) * row_bytes, raw, cols * 2,
                    w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, w12, w13, w14, w15, w16, w17, w18, w19, w20, w21, w22, w23);
          for (int c0 = 0; c0 < cols; c0 += SFU_LANES) {
            LLMC_PIPELINE(LLMC_TRIP_SFU);
            for (int c = c0; c < c0 + SFU_LANES && c < cols; ++c) {
              LLMC_UNROLL;
              act[in.dst][t][c] = embed_fixed(half_to_float((uint16_t)(raw[2 * c] | raw[2 * c + 1] << 8)));
            }
          }
        }
        break;
      }
      case NORM: {
        const uint64_t off[1] = {in.f[NORM_WEIGHT_OFF]};
        float* const dst[1] = {vec};
        read_vectors(pc, 1, off, cols, dst, w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, w12, w13, w14, w15, w16, w17, w18, w19, w20, w21, w22, w23);
        const int group = in.f[NORM_GROUP] > 0 ? (int)in.f[NORM_GROUP] : cols;  // a head at a time for QK-norm
        for (int t = 0; t < rows; ++t) {
          for (int g = 0; g < cols; g += group) {
            rms_norm_row(&act[in.src0][t][g], &vec[g], group, bits_to_float(in.f[NORM_EPS]), &act[in.dst][t][g]);
          }
        }
        break;
      }
      case LNORM: {
        const uint64_t off[2] = {in.f[LNORM_WEIGHT_OFF], in.f[LNORM_BIAS_OFF]};
        float* const dst[2] = {vec, bias};
        read_vectors(pc, 2, off, cols, dst, w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, w12, w13, w14, w15, w16, w17, w18, w19, w20, w21, w22, w23);
        for (int t = 0; t < rows; ++t) layer_norm_row(act[in.src0][t], vec, bias, cols, bits_to_float(in.f[LNORM_EPS]), act[in.dst][t]);
        break;
      }
      case MM:
      case XMM:
        matmul(in, pc, in.op == MM ? next_matmul(program, pc, n_instr) : -1, program, rows, io_buf,
               w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, w12, w13, w14, w15, w16, w17, w18, w19, w20, w21, w22, w23);
        if (flag_field(in.f[MM_FLAGS], MM_FLAG_TO_IO_LSB, 1)) {
          io_from = in.f[MM_IO_OFF];
          io_to = io_from + (uint64_t)rows * in.f[MM_N] * 4;
        }
        break;
      case ROUTE:
        for (int t = 0; t < rows; ++t) route_row(act[in.src0][t], cols, in.f[ROUTE_TOP_K], in.f[ROUTE_NORMALIZE] != 0, act[in.dst][t]);
        break;
      case WEIGH:
        for (int i0 = 0; i0 < elements; i0 += SFU_LANES) {
          LLMC_PIPELINE(LLMC_TRIP_SFU_ROWS);
          for (int i = i0; i < i0 + SFU_LANES && i < elements; ++i) {
            LLMC_UNROLL;
            const int t = i / cols, c = i % cols;
            act[in.dst][t][c] = mul_fixed(act[in.src0][t][c], act[in.src1][t][2 * in.f[WEIGH_SLOT] + 1]);
          }
        }
        break;
      case ROPE: {
        const int half = in.f[ROPE_ROTARY_DIM] / 2;  // rotary_dim / 2 table entries per position
        hbm_latency();
        for (int t = 0; t < rows; ++t) {
          const uint64_t at = (uint64_t)(start_pos + t) * half * 4;
          read_vec(w0, in.f[ROPE_COS_OFF] + at, half, raw);
          for (int i = 0; i < half; ++i) cs[i] = load_i32(raw + 4 * i);
          read_vec(w0, in.f[ROPE_SIN_OFF] + at, half, raw);
          for (int i = 0; i < half; ++i) sn[i] = load_i32(raw + 4 * i);
          rope_row(act[in.src0][t], act[in.dst][t], cols, in.f[ROPE_HEAD_DIM], in.f[ROPE_ROTARY_DIM], cs, sn);
        }
        break;
      }
      case KVAPP:
        kv_append(in, rows, start_pos, kv0, kv1, kv2, kv3, kv4, kv5, kv6, kv7, kv8, kv9, kv10, kv11, kv12, kv13, kv14, kv15, kv16, kv17, kv18, kv19, kv20, kv21, kv22, kv23);
        break;
      case ATTN:
        attention(in, rows, start_pos, kv0, kv1, kv2, kv3, kv4, kv5, kv6, kv7, kv8, kv9, kv10, kv11, kv12, kv13, kv14, kv15, kv16, kv17, kv18, kv19, kv20, kv21, kv22, kv23);
        break;
      case ACT:
        for (int i0 = 0; i0 < elements; i0 += SFU_LANES) {
          LLMC_PIPELINE(LLMC_TRIP_SFU_ROWS);
          for (int i = i0; i < i0 + SFU_LANES && i < elements; ++i) {
            LLMC_UNROLL;
            const int t = i / cols, c = i % cols;
            const int32_t x = act[in.src0][t][c];
            const int fn = in.f[ACT_FN];
            act[in.dst][t][c] = fn == ACT_SILU ? silu_fixed(x) : fn == ACT_RELU ? relu_fixed(x)
                                : fn == ACT_GELU_TANH ? gelu_tanh_fixed(x) : gelu_fixed(x);
          }
        }
        break;
      case EMUL:
      case EADD:
        for (int i0 = 0; i0 < elements; i0 += SFU_LANES) {
          LLMC_PIPELINE(LLMC_TRIP_SFU_ROWS);
          for (int i = i0; i < i0 + SFU_LANES && i < elements; ++i) {
            LLMC_UNROLL;
            const int t = i / cols, c = i % cols;
            const int32_t a = act[in.src0][t][c], b = act[in.src1][t][c];
            act[in.dst][t][c] = in.op == EMUL ? mul_fixed(a, b) : add_sat(a, b);
          }
        }
        break;
      case ESCALE: {
        const uint64_t off[1] = {in.f[ESCALE_VEC_OFF]};
        float* const dst[1] = {vec};
        read_vectors(pc, 1, off, cols, dst, w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, w12, w13, w14, w15, w16, w17, w18, w19, w20, w21, w22, w23);
        for (int i0 = 0; i0 < elements; i0 += SFU_LANES) {
          LLMC_PIPELINE(LLMC_TRIP_SFU_ROWS);
          for (int i = i0; i < i0 + SFU_LANES && i < elements; ++i) {
            LLMC_UNROLL;
            const int t = i / cols, c = i % cols;
            act[in.dst][t][c] = scale_fixed(act[in.src0][t][c], vec[c]);
          }
        }
        break;
      }
      case SEND:  // src0's rows to io at io_off as int32, row-major (past io_buf: a cluster card's mail)
        hbm_latency();
        for (int t = 0; t < rows; ++t) {
          for (int c = 0; c < cols; ++c) store_u32(raw + 4 * c, (uint32_t)act[in.src0][t][c]);  // as the words leave
          write_bytes(io, in.f[SEND_IO_OFF] + (uint64_t)t * cols * 4, raw, cols * 4);
        }
        break;
      case RECV:  // the int32 rows another card sent, delivered to io at io_off
        hbm_latency();
        for (int t = 0; t < rows; ++t) {
          read_bytes(io, in.f[RECV_IO_OFF] + (uint64_t)t * cols * 4, raw, cols * 4);
          for (int c = 0; c < cols; ++c) act[in.dst][t][c] = load_i32(raw + 4 * c);
        }
        break;
      default:
        break;
    }
#ifndef __SYNTHESIS__
    opcode_cycles()[in.op % OPCODE_SLOTS] += cycle_account() - account_before;
#endif
  }
  if (io_to > io_from) {
    hbm_latency();
    write_bytes(io, io_from, io_buf + io_from, (int)(io_to - io_from));
  }
}
