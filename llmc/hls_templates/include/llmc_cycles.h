// The cycle account of C-simulation. LLMC_PIPELINE_II1 stands where a loop is pipelined with II = 1: under
// synthesis it is that pragma; in C-simulation it adds one cycle per iteration to llmc::cycle_account(), so a
// run's account is the cycles its pipelined loops take at that II (pipeline fill and the statements outside
// pipelined loops are not counted), and a loop that runs inside another sequentially counts every iteration.
#ifndef LLMC_CYCLES_H
#define LLMC_CYCLES_H

#include <cstdint>

namespace llmc {

constexpr int OPCODE_SLOTS = 32;  // opcode numbers 0..31

inline uint64_t& cycle_account() {
  static uint64_t cycles = 0;
  return cycles;
}

// The account by opcode number: what each kind of instruction took (C-simulation only).
inline uint64_t* opcode_cycles() {
  static uint64_t cycles[OPCODE_SLOTS] = {};
  return cycles;
}

}  // namespace llmc

#ifdef __SYNTHESIS__
#define LLMC_PIPELINE_II1 _Pragma("HLS PIPELINE II = 1")
#else
#define LLMC_PIPELINE_II1 (++llmc::cycle_account())
#endif

#endif  // LLMC_CYCLES_H
