// C-simulation test bench for "tiny": loads program.bin and weights.bin, then serves
// commands, one a line on stdin. Answers go to stdout, binary and little endian; an account is the
// cycle account of kernel calls (llmc_cycles.h: the total, then one count per opcode number, 33 uint64).
//   run N id1 .. idN   append N tokens (chunked by bucket): their logits (N x vocab float32), then the
//                      account of all their calls
//   reset              forget the sequence
//   quit               end
// A cluster's host runs a card one segment at a time (llmc/sim/cluster_csim.py) with:
//   ids R id1 .. idR   write R token ids into io (no answer)
//   seg B R P PC       one kernel call of bucket B's program on R rows at position P from instruction
//                      PC: the instruction after the SYNC or HALT it stopped at (uint64), then its account
//   get OFF N          N bytes of io from byte OFF
//   put OFF N          followed by N bytes, written into io at byte OFF (no answer)
//   logits R           R x vocab float32 logits from io
// OFF is a byte of the io memory: 25088 bytes, the kernel's io buffer (25088) then a cluster card's mail.
// A command it cannot serve ends the bench with exit status 3 and a line on stderr.
#include <algorithm>
#include <climits>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "llmc_accel.h"
#include "llmc_container.h"

using llmc::port_t;
using llmc::word_t;

namespace {

constexpr long long IO_MEMORY_BYTES = 25088;
constexpr int OP_HALT = 15, OP_SYNC = 18;

// A command the bench refuses (exit status 3).
struct Refused : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A memory of whole 512-bit words holding `bytes` (at least min_bytes), as elements of type T (a word, or a
// narrower port's beats), least significant byte first.
template <typename T>
std::vector<T> to_memory(const std::vector<uint8_t>& bytes, size_t min_bytes) {
  const int per = T::width / 8;
  const size_t n = (std::max(bytes.size(), min_bytes) + 63) / 64 * (64 / per);
  std::vector<T> out(n ? n : 64 / per, T(0));
  for (size_t i = 0; i < bytes.size(); ++i) out[i / per].range(8 * (i % per) + 7, 8 * (i % per)) = bytes[i];
  return out;
}

template <typename T>
uint8_t get_byte(const std::vector<T>& memory, size_t at) {
  const int per = T::width / 8;
  return (uint8_t)memory[at / per].range(8 * (at % per) + 7, 8 * (at % per));
}

template <typename T>
void set_byte(std::vector<T>& memory, size_t at, uint8_t value) {
  const int per = T::width / 8;
  memory[at / per].range(8 * (at % per) + 7, 8 * (at % per)) = value;
}

// The next number of a command line, refused unless it lies in lo..hi.
long long number(std::istringstream& in, const std::string& cmd, const char* what, long long lo, long long hi) {
  long long value = 0;
  if (!(in >> value) || value < lo || value > hi) {
    throw Refused(cmd + ": " + what + " missing or outside " + std::to_string(lo) + ".." + std::to_string(hi));
  }
  return value;
}

// Refuses what follows a command's last argument.
void finished(std::istringstream& in, const std::string& cmd) {
  std::string rest;
  if (in >> rest) throw Refused(cmd + ": unexpected '" + rest + "'");
}

void write_account() {
  const uint64_t total = llmc::cycle_account();
  std::fwrite(&total, sizeof total, 1, stdout);
  std::fwrite(llmc::opcode_cycles(), sizeof(uint64_t), llmc::OPCODE_SLOTS, stdout);
}

void clear_account() {
  llmc::cycle_account() = 0;
  std::fill(llmc::opcode_cycles(), llmc::opcode_cycles() + llmc::OPCODE_SLOTS, 0);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: csim program.bin weights.bin\n";
    return 2;
  }
  try {
    const llmc::Container program = llmc::Container::open(argv[1], 1);
    const llmc::Container weights = llmc::Container::open(argv[2], 2);
    std::vector<port_t> w0 = to_memory<port_t>(weights.section("w0"), 64);
    std::vector<port_t> w1 = to_memory<port_t>(weights.section("w1"), 64);
    std::vector<port_t> w2 = to_memory<port_t>(weights.section("w2"), 64);
    std::vector<port_t> w3 = to_memory<port_t>(weights.section("w3"), 64);
    std::vector<port_t> w4 = to_memory<port_t>(weights.section("w4"), 64);
    std::vector<port_t> w5 = to_memory<port_t>(weights.section("w5"), 64);
    std::vector<port_t> w6 = to_memory<port_t>(weights.section("w6"), 64);
    std::vector<port_t> w7 = to_memory<port_t>(weights.section("w7"), 64);
    std::vector<port_t> w8 = to_memory<port_t>(weights.section("w8"), 64);
    std::vector<port_t> w9 = to_memory<port_t>(weights.section("w9"), 64);
    std::vector<port_t> w10 = to_memory<port_t>(weights.section("w10"), 64);
    std::vector<port_t> w11 = to_memory<port_t>(weights.section("w11"), 64);
    std::vector<port_t> w12 = to_memory<port_t>(weights.section("w12"), 64);
    std::vector<port_t> w13 = to_memory<port_t>(weights.section("w13"), 64);
    std::vector<port_t> w14 = to_memory<port_t>(weights.section("w14"), 64);
    std::vector<port_t> w15 = to_memory<port_t>(weights.section("w15"), 64);
    std::vector<port_t> w16 = to_memory<port_t>(weights.section("w16"), 64);
    std::vector<port_t> w17 = to_memory<port_t>(weights.section("w17"), 64);
    std::vector<port_t> w18 = to_memory<port_t>(weights.section("w18"), 64);
    std::vector<port_t> w19 = to_memory<port_t>(weights.section("w19"), 64);
    std::vector<port_t> w20 = to_memory<port_t>(weights.section("w20"), 64);
    std::vector<port_t> w21 = to_memory<port_t>(weights.section("w21"), 64);
    std::vector<port_t> w22 = to_memory<port_t>(weights.section("w22"), 64);
    std::vector<port_t> w23 = to_memory<port_t>(weights.section("w23"), 64);
    std::vector<port_t> kv0 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv1 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv2 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv3 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv4 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv5 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv6 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv7 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv8 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv9 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv10 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv11 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv12 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv13 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv14 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv15 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv16 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv17 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv18 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv19 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv20 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv21 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv22 = to_memory<port_t>({}, 384);
    std::vector<port_t> kv23 = to_memory<port_t>({}, 384);
    std::vector<port_t> io = to_memory<port_t>({}, IO_MEMORY_BYTES);
    const int buckets[] = { 1, 16, 64 };
    std::vector<std::vector<word_t>> programs;
    for (int b : buckets) programs.push_back(to_memory<word_t>(program.section("bucket_" + std::to_string(b)), 64));
    // One kernel call: program `which` on `rows` rows at position `pos`, from instruction `first`.
    auto call = [&](size_t which, int rows, int pos, int first) {
      llmc_accel(programs[which].data(), w0.data(), w1.data(), w2.data(), w3.data(), w4.data(), w5.data(), w6.data(), w7.data(), w8.data(), w9.data(), w10.data(), w11.data(), w12.data(), w13.data(), w14.data(), w15.data(), w16.data(), w17.data(), w18.data(), w19.data(), w20.data(), w21.data(), w22.data(), w23.data(),
                 kv0.data(), kv1.data(), kv2.data(), kv3.data(), kv4.data(), kv5.data(), kv6.data(), kv7.data(), kv8.data(), kv9.data(), kv10.data(), kv11.data(), kv12.data(), kv13.data(), kv14.data(), kv15.data(), kv16.data(), kv17.data(), kv18.data(), kv19.data(), kv20.data(), kv21.data(), kv22.data(), kv23.data(), io.data(), (int)programs[which].size(), rows, pos,
                 first);
    };
    auto put_ids = [&](const int* ids, int rows) {
      for (int t = 0; t < rows; ++t) {
        for (int b = 0; b < 4; ++b) set_byte(io, 0 + 4 * t + b, (uint8_t)((uint32_t)ids[t] >> (8 * b)));
      }
    };
    std::vector<float> logits;
    auto write_logits = [&](int rows) {
      logits.resize((size_t)rows * 96);
      for (size_t i = 0; i < logits.size(); ++i) {
        uint32_t bits = 0;
        for (int b = 0; b < 4; ++b) bits |= (uint32_t)get_byte(io, 512 + 4 * i + b) << (8 * b);
        logits[i] = llmc::bits_to_float(bits);
      }
      std::fwrite(logits.data(), sizeof(float), logits.size(), stdout);
    };
    int start_pos = 0;
    std::string line;
    while (std::getline(std::cin, line)) {
      std::istringstream in(line);
      std::string cmd;
      in >> cmd;
      if (cmd == "quit") break;
      if (cmd == "reset") {
        start_pos = 0;
      } else if (cmd == "run") {
        const int n = (int)number(in, cmd, "N", 0, INT_MAX);
        if ((long long)start_pos + n > 64) {
          std::cerr << "sequence exceeds the compiled context of 64 tokens\n";
          return 3;
        }
        std::vector<int> ids(n);
        for (int& id : ids) in >> id;
        clear_account();
        for (int done = 0; done < n;) {
          const int left = n - done;
          size_t which = 0;
          while (which + 1 < programs.size() && buckets[which] < left) ++which;
          const int rows = std::min(left, buckets[which]);
          put_ids(ids.data() + done, rows);
          call(which, rows, start_pos, 0);
          write_logits(rows);
          start_pos += rows;
          done += rows;
        }
        write_account();
      } else if (cmd == "ids") {
        std::vector<int> ids((size_t)number(in, cmd, "R", 0, llmc::MAX_ROWS));
        for (int& id : ids) {
          if (!(in >> id)) throw Refused("ids: fewer ids than R");
        }
        finished(in, cmd);
        put_ids(ids.data(), (int)ids.size());
      } else if (cmd == "seg") {
        const int bucket = (int)number(in, cmd, "B", 1, llmc::MAX_ROWS);
        const size_t which = std::find(buckets, std::end(buckets), bucket) - buckets;
        if (which == programs.size()) throw Refused("seg: no program for bucket " + std::to_string(bucket));
        const int rows = (int)number(in, cmd, "R", 1, bucket);
        const int pos = (int)number(in, cmd, "P", 0, 64 - rows);
        const int n_instr = (int)programs[which].size();
        const int first = (int)number(in, cmd, "PC", 0, n_instr);
        finished(in, cmd);
        clear_account();
        call(which, rows, pos, first);
        uint64_t next = first;
        while (next < (uint64_t)n_instr) {
          const int op = (int)programs[which][next++].range(7, 0);
          if (op == OP_HALT || op == OP_SYNC) break;
        }
        std::fwrite(&next, sizeof next, 1, stdout);
        write_account();
      } else if (cmd == "get" || cmd == "put") {
        const long long off = number(in, cmd, "OFF", 0, IO_MEMORY_BYTES);
        std::vector<char> bytes((size_t)number(in, cmd, "N", 0, IO_MEMORY_BYTES - off));
        finished(in, cmd);
        if (cmd == "get") {
          for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = (char)get_byte(io, off + i);
          std::fwrite(bytes.data(), 1, bytes.size(), stdout);
        } else {
          if (!std::cin.read(bytes.data(), (std::streamsize)bytes.size())) throw Refused("put: fewer than N bytes");
          for (size_t i = 0; i < bytes.size(); ++i) set_byte(io, off + i, (uint8_t)bytes[i]);
        }
      } else if (cmd == "logits") {
        const int rows = (int)number(in, cmd, "R", 0, llmc::MAX_ROWS);
        finished(in, cmd);
        write_logits(rows);
      } else {
        throw Refused("unknown command '" + cmd + "'");
      }
      std::fflush(stdout);
    }
  } catch (const Refused& e) {
    std::cerr << e.what() << "\n";
    return 3;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 2;
  }
  return 0;
}
