// The cycle account of C-simulation: what the kernel's own loops take, counted as it runs.
//
// - LLMC_PIPELINE(trips) stands where a loop is pipelined with II = 1 and states its most iterations (a design
//   bound, LLMC_TRIP_* in llmc_accel.h): under synthesis the PIPELINE and LOOP_TRIPCOUNT pragmas; in
//   C-simulation it adds one cycle per iteration to llmc::cycle_account(). A loop that runs inside another
//   sequentially counts every iteration; an unrolled loop (LLMC_UNROLL) counts nothing of its own.
// - loop_depth(n) adds a pipeline's fill once (a stated depth, not an iteration).
// - Dataflow regions (Region): their processes start together and the region ends with the slowest. C-simulation
//   runs the processes one after another, producers first; each starts at the region's start and a process
//   that reads a timed_stream waits for each element's write (one cycle of FIFO latency after it).
// - Memory: a port delivers one 512-bit word per word cycle (the board's memory model, set by the kernel); the
//   first request of an instruction waits hbm_latency() cycles, later bursts are outstanding reads. A transaction
//   (Transaction) that does not start where its port's last one ended takes at least the gap between
//   transactions at unrelated addresses (the round trip over the requests in flight).
#ifndef LLMC_CYCLES_H
#define LLMC_CYCLES_H

#include <cstdint>

#ifdef __SYNTHESIS__
#include <hls_stream.h>
#else
#include <deque>
#include <map>
#include <utility>
#endif

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

// The memory model of the account: extra cycles per port word and the least cycles of a transaction at an
// unrelated address (reads, writes), in 1/65536ths; the first request's latency.
struct PortModel {
  uint32_t extra_q16 = 0;
  uint32_t read_gap_q16 = 0;
  uint32_t write_gap_q16 = 0;
  uint32_t latency = 0;
  uint32_t owed_q16 = 0;  // the stall fractions not yet charged (kept across bursts: the rate holds over them)
};

inline PortModel& port_model() {
  static PortModel model;
  return model;
}

#ifdef __SYNTHESIS__
template <typename T>
using timed_stream = hls::stream<T>;

inline void loop_depth(int) {}
inline void hbm_latency() {}

class PortClock {
 public:
  void beat() {}
};

class Transaction {
 public:
  Transaction(const void*, uint64_t, int, bool) {}
};

class Region {
 public:
  void begin() {}
  void end() {}
};
#else
// A FIFO between dataflow processes whose elements carry the cycle they were written at.
template <typename T>
class timed_stream {
 public:
  void write(const T& value) { fifo_.emplace_back(value, cycle_account()); }
  void write_at(const T& value, uint64_t cycle) { fifo_.emplace_back(value, cycle); }  // written earlier
  T read() {
    const std::pair<T, uint64_t> front = fifo_.front();
    fifo_.pop_front();
    if (cycle_account() < front.second + 1) cycle_account() = front.second + 1;
    return front.first;
  }
  bool empty() const { return fifo_.empty(); }

 private:
  std::deque<std::pair<T, uint64_t> > fifo_;
};

inline void loop_depth(int cycles) { cycle_account() += (uint64_t)cycles; }
inline void hbm_latency() { cycle_account() += port_model().latency; }

// Words at the memory's rate: each beat() of a pipelined loop that moves a port word adds the word's stall.
class PortClock {
 public:
  void beat() {
    PortModel& m = port_model();
    m.owed_q16 += m.extra_q16;
    cycle_account() += m.owed_q16 >> 16;
    m.owed_q16 &= 0xFFFFu;
  }
};

// One burst of n bytes at byte offset off of a port: when it does not start where the port's last one ended, it
// ends no sooner than the read (or write) gap after it started.
class Transaction {
 public:
  Transaction(const void* port, uint64_t off, int n, bool write)
      : start_(cycle_account()), port_(port), end_(off + (uint64_t)n), write_(write) {
    std::map<const void*, uint64_t>::const_iterator last = ends().find(port);
    sequential_ = last != ends().end() && last->second == off;
  }
  ~Transaction() {
    ends()[port_] = end_;
    if (sequential_) return;
    PortModel& m = port_model();
    const uint64_t gap_q16 = write_ ? m.write_gap_q16 : m.read_gap_q16;
    const uint64_t spent_q16 = (cycle_account() - start_) << 16;
    if (spent_q16 >= gap_q16) return;
    m.owed_q16 += (uint32_t)(gap_q16 - spent_q16);
    cycle_account() += m.owed_q16 >> 16;
    m.owed_q16 &= 0xFFFFu;
  }

 private:
  static std::map<const void*, uint64_t>& ends() {
    static std::map<const void*, uint64_t> last_end;
    return last_end;
  }
  uint64_t start_;
  const void* port_;
  uint64_t end_;
  bool write_, sequential_;
};

// A dataflow region: begin() and end() around each process, in the order C-simulation runs them.
class Region {
 public:
  Region() : start_(cycle_account()), end_(start_) {}
  ~Region() { cycle_account() = end_; }
  void begin() { cycle_account() = start_; }
  void end() {
    if (cycle_account() > end_) end_ = cycle_account();
  }

 private:
  uint64_t start_, end_;
};
#endif

}  // namespace llmc

#define LLMC_STRINGIFY(x) #x
#define LLMC_PRAGMA(x) _Pragma(LLMC_STRINGIFY(x))
#ifdef __SYNTHESIS__
#define LLMC_PIPELINE(trips) LLMC_PRAGMA(HLS PIPELINE II = 1) LLMC_PRAGMA(HLS LOOP_TRIPCOUNT max = trips)
#define LLMC_UNROLL _Pragma("HLS UNROLL")
#else
#define LLMC_PIPELINE(trips) (++llmc::cycle_account())
#define LLMC_UNROLL
#endif

#endif  // LLMC_CYCLES_H
