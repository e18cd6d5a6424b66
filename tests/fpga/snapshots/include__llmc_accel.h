// llmc accelerator "tiny": design parameters chosen for u280.
#ifndef LLMC_ACCEL_H
#define LLMC_ACCEL_H

#include "llmc_mem.h"

namespace llmc {
static const int LANES = 8;
static const int KV_CHANNELS = 23;  // cache row j: channel j % KV_CHANNELS
static const int TILE_N = 16;
static const int TILE_K = 256;
static const int MAX_ROWS = 64;
static const int MAX_HIDDEN = 128;
static const int MAX_CONTEXT = 64;
static const int N_BUFFERS = 5;
static const int MAX_TILE_BYTES = 2112;
static const int MAX_GROUPS = 1;
static const int MAX_HEAD_DIM = 32;
static const int MAX_HEADS = 2;
static const int SFU_LANES = 64;
static const int LUT_G = 4;
}  // namespace llmc

extern "C" void llmc_accel(
    const llmc::word_t* program,
    const llmc::word_t* w0,
    const llmc::word_t* w1,
    const llmc::word_t* w2,
    const llmc::word_t* w3,
    const llmc::word_t* w4,
    const llmc::word_t* w5,
    const llmc::word_t* w6,
    const llmc::word_t* w7,
    llmc::word_t* kv0,
    llmc::word_t* kv1,
    llmc::word_t* kv2,
    llmc::word_t* kv3,
    llmc::word_t* kv4,
    llmc::word_t* kv5,
    llmc::word_t* kv6,
    llmc::word_t* kv7,
    llmc::word_t* kv8,
    llmc::word_t* kv9,
    llmc::word_t* kv10,
    llmc::word_t* kv11,
    llmc::word_t* kv12,
    llmc::word_t* kv13,
    llmc::word_t* kv14,
    llmc::word_t* kv15,
    llmc::word_t* kv16,
    llmc::word_t* kv17,
    llmc::word_t* kv18,
    llmc::word_t* kv19,
    llmc::word_t* kv20,
    llmc::word_t* kv21,
    llmc::word_t* kv22,
    llmc::word_t* io,
    int n_instr,
    int seq_len,
    int start_pos,
    int first_instr
);

#endif
