// llmc accelerator "tiny": design parameters chosen for u280.
#ifndef LLMC_ACCEL_H
#define LLMC_ACCEL_H

#define LLMC_SFU_LANES 64  // llmc_math.h's passes over a row: SFU_LANES elements per cycle
#define LLMC_PORT_BITS 512  // llmc_mem.h: the weight, KV and io ports' width (the program's is 512)
// The most iterations of each kind of pipelined loop (LLMC_PIPELINE's LOOP_TRIPCOUNT), from the design's bounds.
#define LLMC_TRIP_BEATS 2
#define LLMC_TRIP_TILE_WORDS 33
#define LLMC_TRIP_VECTOR_WORDS 1
#define LLMC_TRIP_ROWS 64
#define LLMC_TRIP_GROUPS 1
#define LLMC_TRIP_HEAD_CHUNKS 1
#define LLMC_TRIP_HEAD_SFU 1
#define LLMC_TRIP_SFU 2
#define LLMC_TRIP_SFU_ROWS 128
#define LLMC_TRIP_HIDDEN 128
#define LLMC_TRIP_HEAD_DIM 32
#define LLMC_TRIP_TRANSFER 393

#include "llmc_mem.h"

namespace llmc {
static const int LANES = 24;
static const int KV_CHANNELS = 24;  // cache row j: channel j % KV_CHANNELS
static const int TILE_N = 16;
static const int TILE_K = 64;
static const int MAX_ROWS = 64;
static const int MAX_HIDDEN = 128;
static const int MAX_CONTEXT = 64;
static const int N_BUFFERS = 5;
static const int MAX_TILE_BYTES = 2112;
static const int MAX_GROUPS = 1;
static const int MAX_SUM_GROUPS = 1;  // groups of an MM input whose weights have minimums
static const int MAX_HEAD_DIM = 32;
static const int MAX_HEADS = 2;
static const int KV_GROUP = 1;  // KV heads whose cache rows attention loads at once
static const int SFU_LANES = 64;
static const int LUT_G = 4;
// The cycle account's memory and control (llmc_cycles.h; the timing model's constants, llmc/backends/fpga/timing.py):
// a port word costs 1.2218 cycles (52.38 bytes per cycle per port at 250.0 MHz),
// a transaction at an unrelated address at least 3.3594 cycles (a read) or 26.8750 (a write),
// an instruction's first memory request 54 cycles, an instruction's fetch and decode 16.
static const uint32_t WORD_EXTRA_Q16 = 14535;
static const uint32_t READ_GAP_Q16 = 220160;
static const uint32_t WRITE_GAP_Q16 = 1761280;
static const int HBM_LATENCY = 54;
static const int INSTR_DEPTH = 16;
}  // namespace llmc

extern "C" void llmc_accel(
    const llmc::word_t* program,
    const llmc::port_t* w0,
    const llmc::port_t* w1,
    const llmc::port_t* w2,
    const llmc::port_t* w3,
    const llmc::port_t* w4,
    const llmc::port_t* w5,
    const llmc::port_t* w6,
    const llmc::port_t* w7,
    const llmc::port_t* w8,
    const llmc::port_t* w9,
    const llmc::port_t* w10,
    const llmc::port_t* w11,
    const llmc::port_t* w12,
    const llmc::port_t* w13,
    const llmc::port_t* w14,
    const llmc::port_t* w15,
    const llmc::port_t* w16,
    const llmc::port_t* w17,
    const llmc::port_t* w18,
    const llmc::port_t* w19,
    const llmc::port_t* w20,
    const llmc::port_t* w21,
    const llmc::port_t* w22,
    const llmc::port_t* w23,
    llmc::port_t* kv0,
    llmc::port_t* kv1,
    llmc::port_t* kv2,
    llmc::port_t* kv3,
    llmc::port_t* kv4,
    llmc::port_t* kv5,
    llmc::port_t* kv6,
    llmc::port_t* kv7,
    llmc::port_t* kv8,
    llmc::port_t* kv9,
    llmc::port_t* kv10,
    llmc::port_t* kv11,
    llmc::port_t* kv12,
    llmc::port_t* kv13,
    llmc::port_t* kv14,
    llmc::port_t* kv15,
    llmc::port_t* kv16,
    llmc::port_t* kv17,
    llmc::port_t* kv18,
    llmc::port_t* kv19,
    llmc::port_t* kv20,
    llmc::port_t* kv21,
    llmc::port_t* kv22,
    llmc::port_t* kv23,
    llmc::port_t* io,
    int n_instr,
    int seq_len,
    int start_pos,
    int first_instr
);

#endif
