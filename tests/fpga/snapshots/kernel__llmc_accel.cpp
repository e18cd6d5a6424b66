// llmc accelerator "tiny": instruction fetch and decode, matrix, LUT and special-function
// engines. The arithmetic is llmc_math.h's; the sparse DSP chain and the LUT engine are the RTL units
// in rtl/, called as HLS RTL black boxes (C-simulation runs their C++ models, rtl/*.cpp). This file
// moves data, builds the units' beats and sequences them.
#include "llmc_accel.h"  // first: llmc_mem.h sets the diagnostics for the ap_types headers

#include <hls_stream.h>

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
constexpr int MM_FLAG_SPARSE_N_LSB = 12;
constexpr int MM_FLAG_SPARSE_N_WIDTH = 4;
constexpr int MM_FLAG_SPARSE_M_LSB = 16;
constexpr int MM_FLAG_SPARSE_M_WIDTH = 5;
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
                      const word_t* w0,
                      const word_t* w1,
                      const word_t* w2,
                      const word_t* w3,
                      const word_t* w4,
                      const word_t* w5,
                      const word_t* w6,
                      const word_t* w7) {
  switch (lane) {
    case 0: read_bytes(w0, off, dst, n); break;
    case 1: read_bytes(w1, off, dst, n); break;
    case 2: read_bytes(w2, off, dst, n); break;
    case 3: read_bytes(w3, off, dst, n); break;
    case 4: read_bytes(w4, off, dst, n); break;
    case 5: read_bytes(w5, off, dst, n); break;
    case 6: read_bytes(w6, off, dst, n); break;
    case 7: read_bytes(w7, off, dst, n); break;
    default: break;
  }
}

static word_t* kv_port(int channel,
                       word_t* kv0,
                       word_t* kv1,
                       word_t* kv2,
                       word_t* kv3,
                       word_t* kv4,
                       word_t* kv5,
                       word_t* kv6,
                       word_t* kv7,
                       word_t* kv8,
                       word_t* kv9,
                       word_t* kv10,
                       word_t* kv11,
                       word_t* kv12,
                       word_t* kv13,
                       word_t* kv14,
                       word_t* kv15,
                       word_t* kv16,
                       word_t* kv17,
                       word_t* kv18,
                       word_t* kv19,
                       word_t* kv20,
                       word_t* kv21,
                       word_t* kv22) {
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
    default: return kv0;
  }
}

// Activation buffers, kept on chip between instructions.
static int32_t act[N_BUFFERS][MAX_ROWS][MAX_HIDDEN];

// The lanes' weight tiles, ping-pong: tile t+1 loads while tile t computes, and the weight loader
// fetches the next MM's first tile into the free half once the lanes' channels are idle.
static uint8_t tile[2][MAX_TILE_BYTES];
static int first_half = 0;   // the half that holds (or will hold) the next MM's first tile
static int prefetched = -1;  // the pc of the MM whose first tile is already in tile[first_half]

// Instructions that stream from the weight lanes' channels (the KV cache and the embedding rows share them).
static bool streams_lanes(int op) { return op == MM || op == XMM || op == ATTN || op == KVAPP || op == EMBED; }

// DSP engine: the tile's codes (int8 bytes, or int4 nibbles low first) as one int8 per code.
static void unpack_codes(const uint8_t* tile, int bits, bool is_signed, int k, int8_t codes[TILE_N][MAX_HIDDEN]) {
  const int stored = bits > 4 ? 8 : 4;
  for (int i = 0; i < TILE_N * k; ++i) {
    LLMC_PIPELINE_II1;
    int v = stored == 8 ? tile[i] : (tile[i / 2] >> (4 * (i % 2))) & 0xF;
    if (is_signed && v >= (1 << (stored - 1))) v -= 1 << stored;
    codes[i / k][i % k] = (int8_t)v;
  }
}

static void matmul(const Instr& in, int pc, int rows, uint8_t* io,
                   const word_t* w0,
                   const word_t* w1,
                   const word_t* w2,
                   const word_t* w3,
                   const word_t* w4,
                   const word_t* w5,
                   const word_t* w6,
                   const word_t* w7) {
  const int n = in.f[MM_N], k = in.f[MM_K], group = in.f[MM_GROUP], shift = in.f[MM_SHIFT];
  const uint32_t flags = in.f[MM_FLAGS];
  const uint64_t weight_off = in.f[MM_WEIGHT_OFF];
  const bool by_expert = in.op == XMM;  // row r uses expert act[src1][r][2 slot], its tiles expert_stride apart
  const int experts = by_expert ? (int)in.f[XMM_EXPERTS] : 1, slot = in.f[XMM_SLOT];
  const uint64_t expert_stride = in.f[XMM_EXPERT_STRIDE];
  const int tile_bytes = in.f[MM_TILE_BYTES], row_block = in.f[MM_ROW_BLOCK], tiles = in.f[MM_TILES];
  const uint64_t io_off = in.f[MM_IO_OFF];
  const float cap = bits_to_float(in.f[MM_CAP]);  // logits soft-capping: tanh(v) * cap (its 1 / cap is in the weights)
  const int bits = flag_field(flags, MM_FLAG_BITS_LSB, MM_FLAG_BITS_WIDTH);
  const int engine = flag_field(flags, MM_FLAG_ENGINE_LSB, MM_FLAG_ENGINE_WIDTH);
  const bool has_zero = flag_field(flags, MM_FLAG_HAS_ZERO_LSB, 1), has_bias = flag_field(flags, MM_FLAG_HAS_BIAS_LSB, 1);
  const bool is_signed = !flag_field(flags, MM_FLAG_UNSIGNED_LSB, 1), to_io = flag_field(flags, MM_FLAG_TO_IO_LSB, 1);
  const int sp_n = flag_field(flags, MM_FLAG_SPARSE_N_LSB, MM_FLAG_SPARSE_N_WIDTH);
  const int sp_m = flag_field(flags, MM_FLAG_SPARSE_M_LSB, MM_FLAG_SPARSE_M_WIDTH);
  const int groups = k / group;
  const int stored = bits > 4 ? 8 : 4;
  const int count = engine == ENGINE_SPARSE ? TILE_N * (k / sp_m) * sp_n : TILE_N * k;
  const int code_bytes = engine == ENGINE_LUT ? bits * TILE_N * k / 8 : count * stored / 8 + (engine == ENGINE_SPARSE ? count / 2 : 0);
  const int scales_at = (code_bytes + 63) / 64 * 64;
  const int zeros_at = scales_at + (TILE_N * groups * 4 + 63) / 64 * 64;
  const int bias_at = zeros_at + (has_zero ? (TILE_N * groups * 2 + 63) / 64 * 64 : 0);

  static int8_t xq[MAX_ROWS][MAX_HIDDEN];
  static int32_t xs[MAX_ROWS];
  static int8_t codes[TILE_N][MAX_HIDDEN];
  static int chosen[MAX_ROWS];  // the rows of the current expert (every row for MM)
  for (int r = 0; r < rows; ++r) quant8(act[in.src0][r], k, k, xq[r], &xs[r]);
  bool first_pass = true;  // the loader may have fetched the first tile of the first pass
  for (int e = 0; e < experts; ++e) {  // each chosen expert streams once, for all its rows
    int picked = 0;
    for (int r = 0; r < rows; ++r) {
      if (!by_expert || act[in.src1][r][2 * slot] == e) chosen[picked++] = r;
    }
    const uint64_t base = weight_off + (uint64_t)e * expert_stride;
    for (int r0 = 0; r0 < picked; r0 += row_block) {
      const int r1 = r0 + row_block < picked ? r0 + row_block : picked;
      const int half = first_half;
      if (r0 > 0 || !first_pass || prefetched != pc) {
        read_lane(0, base, tile[half], tile_bytes, w0, w1, w2, w3, w4, w5, w6, w7);
      }
      first_pass = false;
      first_half = (half + tiles) % 2;  // after this pass: the half its last tile does not use
      for (int t = 0; t < tiles; ++t) {
        const uint8_t* cur = tile[(half + t) % 2];
        if (t + 1 < tiles) {
          read_lane((t + 1) % LANES, base + (uint64_t)((t + 1) / LANES) * tile_bytes, tile[(half + t + 1) % 2],
                    tile_bytes, w0, w1, w2, w3, w4, w5, w6, w7);
        }
        if (engine == ENGINE_DSP) unpack_codes(cur, bits, is_signed, k, codes);
        for (int j = 0; j < TILE_N; ++j) {
          const int col = t * TILE_N + j;
          if (col >= n) break;
          for (int i = r0; i < r1; ++i) {
            const int r = chosen[i];
            int64_t total = 0;
            for (int g = 0; g < groups; ++g) {
              const int zero = has_zero ? load_i16(cur + zeros_at + (j * groups + g) * 2) : 0;
              const int64_t scale = load_i32(cur + scales_at + (j * groups + g) * 4);
              int64_t dot = 0;
              if (engine == ENGINE_DSP) {
                dot = group_dot(&xq[r][g * group], &codes[j][g * group], group, zero);
              }
              total += dot * scale;
            }
            int32_t y = requantize(total, xs[r], shift);
            if (has_bias) y = saturate((int64_t)y + load_i32(cur + bias_at + j * 4));
            if (to_io) {
              const float v = fixed_to_f32(y);
              store_u32(io + io_off + ((uint64_t)r * n + col) * 4, float_to_bits(cap != 0.0f ? tanh_f32(v) * cap : v));
            } else {
              act[in.dst][r][col] = y;
            }
          }
        }
      }
    }
  }
}

// The first expert an XMM streams: the lowest one that a row's route names at its slot.
static int first_expert(const Instr& in, int rows) {
  int first = -1;
  for (int r = 0; r < rows; ++r) {
    const int e = act[in.src1][r][2 * in.f[XMM_SLOT]];
    if (first < 0 || e < first) first = e;
  }
  return first;
}

// The weight loader's lookahead: after an instruction that streams from the lanes' channels, the
// first tile of the next MM (unless another such instruction, or the end of the call, comes first) goes
// to the free half; that of the next XMM too, unless an instruction before it writes its route (the
// expert is not known yet).
static void prefetch_next_tile(const word_t* program, int pc, int n_instr, int rows,
                               const word_t* w0,
                               const word_t* w1,
                               const word_t* w2,
                               const word_t* w3,
                               const word_t* w4,
                               const word_t* w5,
                               const word_t* w6,
                               const word_t* w7) {
  prefetched = -1;
  bool written[N_BUFFERS] = {};
  for (int p = pc + 1; p < n_instr; ++p) {
    const Instr next = fetch(program, p);
    if (next.op == MM || (next.op == XMM && !written[next.src1])) {
      const uint64_t expert = next.op == XMM ? (uint64_t)first_expert(next, rows) * next.f[XMM_EXPERT_STRIDE] : 0;
      read_lane(0, next.f[MM_WEIGHT_OFF] + expert, tile[first_half], next.f[MM_TILE_BYTES], w0, w1, w2, w3, w4, w5, w6, w7);
      prefetched = p;
      return;
    }
    if (next.op == HALT || next.op == SYNC || streams_lanes(next.op)) return;
    written[next.dst] = true;
  }
}

static void attention(const Instr& in, int rows, int start_pos,
                      word_t* kv0,
                      word_t* kv1,
                      word_t* kv2,
                      word_t* kv3,
                      word_t* kv4,
                      word_t* kv5,
                      word_t* kv6,
                      word_t* kv7,
                      word_t* kv8,
                      word_t* kv9,
                      word_t* kv10,
                      word_t* kv11,
                      word_t* kv12,
                      word_t* kv13,
                      word_t* kv14,
                      word_t* kv15,
                      word_t* kv16,
                      word_t* kv17,
                      word_t* kv18,
                      word_t* kv19,
                      word_t* kv20,
                      word_t* kv21,
                      word_t* kv22) {
  const int heads = in.f[ATTN_HEADS], kv_heads = in.f[ATTN_KV_HEADS], d = in.f[ATTN_HEAD_DIM];
  const float scale = bits_to_float(in.f[ATTN_SCALE]);
  const int window = in.f[ATTN_WINDOW];  // 0: every row up to the query's position; else only the last window of them
  const float softcap = bits_to_float(in.f[ATTN_SOFTCAP]);  // 0: none; else scores become tanh(s / softcap) * softcap
  const int s = start_pos + rows;
  const int first = window > 0 && start_pos + 1 > window ? start_pos + 1 - window : 0;  // row 0's first key
  static int8_t kc[MAX_CONTEXT * MAX_HEAD_DIM], vc[MAX_CONTEXT * MAX_HEAD_DIM];
  static int32_t ks[MAX_CONTEXT], vs[MAX_CONTEXT];
  static float scores[MAX_CONTEXT];
  static int8_t qc[MAX_HEADS * MAX_HEAD_DIM];
  static int32_t qs[MAX_HEADS];
  static uint8_t row[MAX_HEADS * MAX_HEAD_DIM * 4];
  const int width = kv_heads * d;
  for (int h = 0; h < kv_heads; ++h) {
    for (int j = first; j < s; ++j) {  // this KV head's slice of the cache: row j on channel j % KV_CHANNELS
      word_t* port = kv_port(j % KV_CHANNELS, kv0, kv1, kv2, kv3, kv4, kv5, kv6, kv7, kv8, kv9, kv10, kv11, kv12, kv13, kv14, kv15, kv16, kv17, kv18, kv19, kv20, kv21, kv22);
      const uint64_t at = j / KV_CHANNELS;
      read_bytes(port, in.f[ATTN_K_CODES_OFF] + at * width + h * d, (uint8_t*)&kc[j * d], d);
      read_bytes(port, in.f[ATTN_V_CODES_OFF] + at * width + h * d, (uint8_t*)&vc[j * d], d);
      read_bytes(port, in.f[ATTN_K_SCALES_OFF] + (at * kv_heads + h) * 4, row, 4);
      ks[j] = load_i32(row);
      read_bytes(port, in.f[ATTN_V_SCALES_OFF] + (at * kv_heads + h) * 4, row, 4);
      vs[j] = load_i32(row);
    }
    for (int t = 0; t < rows; ++t) {
      quant8(act[in.src0][t], heads * d, d, qc, qs);
      for (int qh = h * (heads / kv_heads); qh < (h + 1) * (heads / kv_heads); ++qh) {
        const int visible = start_pos + t + 1;
        const int from = window > 0 && visible > window ? visible - window : 0;
        attention_row(&qc[qh * d], qs[qh], kc, ks, vc, vs, from, visible, 0, 1, d, scale, softcap, scores,
                      &act[in.dst][t][qh * d]);
      }
    }
  }
}

static void kv_append(const Instr& in, int rows, int start_pos,
                      word_t* kv0,
                      word_t* kv1,
                      word_t* kv2,
                      word_t* kv3,
                      word_t* kv4,
                      word_t* kv5,
                      word_t* kv6,
                      word_t* kv7,
                      word_t* kv8,
                      word_t* kv9,
                      word_t* kv10,
                      word_t* kv11,
                      word_t* kv12,
                      word_t* kv13,
                      word_t* kv14,
                      word_t* kv15,
                      word_t* kv16,
                      word_t* kv17,
                      word_t* kv18,
                      word_t* kv19,
                      word_t* kv20,
                      word_t* kv21,
                      word_t* kv22) {
  const int kv_heads = in.f[KVAPP_KV_HEADS], d = in.f[KVAPP_HEAD_DIM];
  const int width = kv_heads * d;
  static int8_t codes[MAX_HIDDEN];
  static int32_t scales[MAX_HEADS];
  static uint8_t bytes[MAX_HEADS * 4];
  for (int t = 0; t < rows; ++t) {
    const int j = start_pos + t;
    word_t* port = kv_port(j % KV_CHANNELS, kv0, kv1, kv2, kv3, kv4, kv5, kv6, kv7, kv8, kv9, kv10, kv11, kv12, kv13, kv14, kv15, kv16, kv17, kv18, kv19, kv20, kv21, kv22);
    const uint64_t at = j / KV_CHANNELS;
    quant8(act[in.src0][t], width, d, codes, scales);
    write_bytes(port, in.f[KVAPP_CODES_OFF] + at * width, (const uint8_t*)codes, width);
    for (int h = 0; h < kv_heads; ++h) store_u32(&bytes[h * 4], (uint32_t)scales[h]);
    write_bytes(port, in.f[KVAPP_SCALES_OFF] + at * kv_heads * 4, bytes, kv_heads * 4);
  }
}

static void read_vec(const word_t* w0, uint64_t off, int n, uint8_t* raw) { read_bytes(w0, off, raw, n * 4); }

}  // namespace llmc

using namespace llmc;

extern "C" void llmc_accel(
    const word_t* program,
    const word_t* w0,
    const word_t* w1,
    const word_t* w2,
    const word_t* w3,
    const word_t* w4,
    const word_t* w5,
    const word_t* w6,
    const word_t* w7,
    word_t* kv0,
    word_t* kv1,
    word_t* kv2,
    word_t* kv3,
    word_t* kv4,
    word_t* kv5,
    word_t* kv6,
    word_t* kv7,
    word_t* kv8,
    word_t* kv9,
    word_t* kv10,
    word_t* kv11,
    word_t* kv12,
    word_t* kv13,
    word_t* kv14,
    word_t* kv15,
    word_t* kv16,
    word_t* kv17,
    word_t* kv18,
    word_t* kv19,
    word_t* kv20,
    word_t* kv21,
    word_t* kv22,
    word_t* io,
    int n_instr,
    int seq_len,
    int start_pos,
    int first_instr
) {
#pragma HLS INTERFACE m_axi port = program bundle = gmem_prog offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w0 bundle = gmem_w0 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w1 bundle = gmem_w1 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w2 bundle = gmem_w2 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w3 bundle = gmem_w3 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w4 bundle = gmem_w4 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w5 bundle = gmem_w5 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w6 bundle = gmem_w6 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = w7 bundle = gmem_w7 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv0 bundle = gmem_kv0 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv1 bundle = gmem_kv1 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv2 bundle = gmem_kv2 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv3 bundle = gmem_kv3 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv4 bundle = gmem_kv4 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv5 bundle = gmem_kv5 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv6 bundle = gmem_kv6 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv7 bundle = gmem_kv7 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv8 bundle = gmem_kv8 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv9 bundle = gmem_kv9 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv10 bundle = gmem_kv10 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv11 bundle = gmem_kv11 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv12 bundle = gmem_kv12 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv13 bundle = gmem_kv13 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv14 bundle = gmem_kv14 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv15 bundle = gmem_kv15 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv16 bundle = gmem_kv16 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv17 bundle = gmem_kv17 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv18 bundle = gmem_kv18 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv19 bundle = gmem_kv19 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv20 bundle = gmem_kv20 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv21 bundle = gmem_kv21 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = kv22 bundle = gmem_kv22 offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
#pragma HLS INTERFACE m_axi port = io bundle = gmem_io offset = slave max_read_burst_length = 64 num_read_outstanding = 8 max_write_burst_length = 16 num_write_outstanding = 2
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
  read_bytes(io, 0, io_buf, 512);
  prefetched = -1;  // a tile left by the previous call belongs to another program or segment
  bool wrote_io = false;
  // A call runs from first_instr to HALT, or to SYNC: the end of a cluster card's segment, after which
  // the host moves what the cards sent and calls again from the instruction after the SYNC.
  for (int pc = first_instr; pc < n_instr; ++pc) {
    const Instr in = fetch(program, pc);
    if (in.op == HALT || in.op == SYNC) break;
#ifndef __SYNTHESIS__
    const uint64_t account_before = cycle_account();
#endif
    const int cols = in.f[COLS];
    switch (in.op) {
      case EMBED: {
        const int row_bytes = (cols * 2 + 63) / 64 * 64;
        for (int t = 0; t < rows; ++t) {
          const int id = (in.f[EMBED_BY_POSITION] ? start_pos + t : load_i32(io_buf + 0 + 4 * t)) + (int)in.f[EMBED_OFFSET];
          read_lane(id % LANES, in.f[EMBED_TABLE_OFF] + (uint64_t)(id / LANES) * row_bytes, raw, cols * 2,
                    w0, w1, w2, w3, w4, w5, w6, w7);
          for (int c = 0; c < cols; ++c) {
            LLMC_PIPELINE_II1;
            act[in.dst][t][c] = embed_fixed(half_to_float((uint16_t)(raw[2 * c] | raw[2 * c + 1] << 8)));
          }
        }
        break;
      }
      case NORM: {
        read_vec(w0, in.f[NORM_WEIGHT_OFF], cols, raw);
        for (int c = 0; c < cols; ++c) {
          LLMC_PIPELINE_II1;
          vec[c] = bits_to_float(load_u32(raw + 4 * c));
        }
        const int group = in.f[NORM_GROUP] > 0 ? (int)in.f[NORM_GROUP] : cols;  // a head at a time for QK-norm
        for (int t = 0; t < rows; ++t) {
          for (int g = 0; g < cols; g += group) {
            rms_norm_row(&act[in.src0][t][g], &vec[g], group, bits_to_float(in.f[NORM_EPS]), &act[in.dst][t][g]);
          }
        }
        break;
      }
      case LNORM: {
        read_vec(w0, in.f[LNORM_WEIGHT_OFF], cols, raw);
        for (int c = 0; c < cols; ++c) {
          LLMC_PIPELINE_II1;
          vec[c] = bits_to_float(load_u32(raw + 4 * c));
        }
        read_vec(w0, in.f[LNORM_BIAS_OFF], cols, raw);
        for (int c = 0; c < cols; ++c) {
          LLMC_PIPELINE_II1;
          bias[c] = bits_to_float(load_u32(raw + 4 * c));
        }
        for (int t = 0; t < rows; ++t) layer_norm_row(act[in.src0][t], vec, bias, cols, bits_to_float(in.f[LNORM_EPS]), act[in.dst][t]);
        break;
      }
      case MM:
      case XMM:
        matmul(in, pc, rows, io_buf, w0, w1, w2, w3, w4, w5, w6, w7);
        wrote_io = wrote_io || flag_field(in.f[MM_FLAGS], MM_FLAG_TO_IO_LSB, 1);
        break;
      case ROUTE:
        for (int t = 0; t < rows; ++t) route_row(act[in.src0][t], cols, in.f[ROUTE_TOP_K], in.f[ROUTE_NORMALIZE] != 0, act[in.dst][t]);
        break;
      case WEIGH:
        for (int t = 0; t < rows; ++t) {
          const int32_t w = act[in.src1][t][2 * in.f[WEIGH_SLOT] + 1];
          for (int c = 0; c < cols; ++c) {
            LLMC_PIPELINE_II1;
            act[in.dst][t][c] = mul_fixed(act[in.src0][t][c], w);
          }
        }
        break;
      case ROPE: {
        const int half = in.f[ROPE_ROTARY_DIM] / 2;  // rotary_dim / 2 table entries per position
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
        kv_append(in, rows, start_pos, kv0, kv1, kv2, kv3, kv4, kv5, kv6, kv7, kv8, kv9, kv10, kv11, kv12, kv13, kv14, kv15, kv16, kv17, kv18, kv19, kv20, kv21, kv22);
        break;
      case ATTN:
        attention(in, rows, start_pos, kv0, kv1, kv2, kv3, kv4, kv5, kv6, kv7, kv8, kv9, kv10, kv11, kv12, kv13, kv14, kv15, kv16, kv17, kv18, kv19, kv20, kv21, kv22);
        break;
      case ACT:
        for (int t = 0; t < rows; ++t) {
          for (int c = 0; c < cols; ++c) {
            LLMC_PIPELINE_II1;
            const int32_t x = act[in.src0][t][c];
            const int fn = in.f[ACT_FN];
            act[in.dst][t][c] = fn == ACT_SILU ? silu_fixed(x) : fn == ACT_RELU ? relu_fixed(x)
                                : fn == ACT_GELU_TANH ? gelu_tanh_fixed(x) : gelu_fixed(x);
          }
        }
        break;
      case EMUL:
      case EADD:
        for (int t = 0; t < rows; ++t) {
          for (int c = 0; c < cols; ++c) {
            LLMC_PIPELINE_II1;
            const int32_t a = act[in.src0][t][c], b = act[in.src1][t][c];
            act[in.dst][t][c] = in.op == EMUL ? mul_fixed(a, b) : add_sat(a, b);
          }
        }
        break;
      case ESCALE:
        read_vec(w0, in.f[ESCALE_VEC_OFF], cols, raw);
        for (int c = 0; c < cols; ++c) {
          LLMC_PIPELINE_II1;
          vec[c] = bits_to_float(load_u32(raw + 4 * c));
        }
        for (int t = 0; t < rows; ++t) {
          for (int c = 0; c < cols; ++c) {
            LLMC_PIPELINE_II1;
            act[in.dst][t][c] = scale_fixed(act[in.src0][t][c], vec[c]);
          }
        }
        break;
      case SEND:  // src0's rows to io at io_off as int32, row-major (past io_buf: a cluster card's mail)
        for (int t = 0; t < rows; ++t) {
          for (int c = 0; c < cols; ++c) {
            LLMC_PIPELINE_II1;
            store_u32(raw + 4 * c, (uint32_t)act[in.src0][t][c]);
          }
          write_bytes(io, in.f[SEND_IO_OFF] + (uint64_t)t * cols * 4, raw, cols * 4);
        }
        break;
      case RECV:  // the int32 rows another card sent, delivered to io at io_off
        for (int t = 0; t < rows; ++t) {
          read_bytes(io, in.f[RECV_IO_OFF] + (uint64_t)t * cols * 4, raw, cols * 4);
          for (int c = 0; c < cols; ++c) {
            LLMC_PIPELINE_II1;
            act[in.dst][t][c] = load_i32(raw + 4 * c);
          }
        }
        break;
      default:
        break;
    }
    if (streams_lanes(in.op)) prefetch_next_tile(program, pc, n_instr, rows, w0, w1, w2, w3, w4, w5, w6, w7);
#ifndef __SYNTHESIS__
    opcode_cycles()[in.op % OPCODE_SLOTS] += cycle_account() - account_before;
#endif
  }
  if (wrote_io) write_bytes(io, 0, io_buf, 25088);
}
