// C-simulation test bench for "tiny": loads program.bin and weights.bin, then serves
// commands on stdin: "run N id1 .. idN" appends N tokens and writes their logits (N x vocab
// float32, little endian) then its cycle account (llmc_cycles.h: the total and one count per opcode
// number, 17 uint64) to stdout; "reset" forgets the sequence; "quit" ends.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "llmc_accel.h"
#include "llmc_container.h"

using llmc::word_t;

static std::vector<word_t> to_words(const std::vector<uint8_t>& bytes, size_t min_bytes) {
  const size_t n = (std::max(bytes.size(), min_bytes) + 63) / 64;
  std::vector<word_t> words(n ? n : 1, word_t(0));
  for (size_t i = 0; i < bytes.size(); ++i) words[i / 64].range(8 * (i % 64) + 7, 8 * (i % 64)) = bytes[i];
  return words;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: csim program.bin weights.bin\n";
    return 2;
  }
  try {
    const llmc::Container program = llmc::Container::open(argv[1], 1);
    const llmc::Container weights = llmc::Container::open(argv[2], 2);
    std::vector<word_t> w0 = to_words(weights.section("w0"), 64);
    std::vector<word_t> w1 = to_words(weights.section("w1"), 64);
    std::vector<word_t> w2 = to_words(weights.section("w2"), 64);
    std::vector<word_t> w3 = to_words(weights.section("w3"), 64);
    std::vector<word_t> w4 = to_words(weights.section("w4"), 64);
    std::vector<word_t> w5 = to_words(weights.section("w5"), 64);
    std::vector<word_t> w6 = to_words(weights.section("w6"), 64);
    std::vector<word_t> w7 = to_words(weights.section("w7"), 64);
    std::vector<word_t> kv0 = to_words({}, 384);
    std::vector<word_t> kv1 = to_words({}, 384);
    std::vector<word_t> kv2 = to_words({}, 384);
    std::vector<word_t> kv3 = to_words({}, 384);
    std::vector<word_t> kv4 = to_words({}, 384);
    std::vector<word_t> kv5 = to_words({}, 384);
    std::vector<word_t> kv6 = to_words({}, 384);
    std::vector<word_t> kv7 = to_words({}, 384);
    std::vector<word_t> kv8 = to_words({}, 384);
    std::vector<word_t> kv9 = to_words({}, 384);
    std::vector<word_t> kv10 = to_words({}, 384);
    std::vector<word_t> kv11 = to_words({}, 384);
    std::vector<word_t> kv12 = to_words({}, 384);
    std::vector<word_t> kv13 = to_words({}, 384);
    std::vector<word_t> kv14 = to_words({}, 384);
    std::vector<word_t> kv15 = to_words({}, 384);
    std::vector<word_t> kv16 = to_words({}, 384);
    std::vector<word_t> kv17 = to_words({}, 384);
    std::vector<word_t> kv18 = to_words({}, 384);
    std::vector<word_t> kv19 = to_words({}, 384);
    std::vector<word_t> kv20 = to_words({}, 384);
    std::vector<word_t> kv21 = to_words({}, 384);
    std::vector<word_t> kv22 = to_words({}, 384);
    std::vector<word_t> io = to_words({}, 25088);
    const int buckets[] = { 1, 16, 64 };
    std::vector<std::vector<word_t>> programs;
    for (int b : buckets) programs.push_back(to_words(program.section("bucket_" + std::to_string(b)), 64));
    int start_pos = 0;
    std::string line;
    std::vector<float> logits;
    while (std::getline(std::cin, line)) {
      std::istringstream in(line);
      std::string cmd;
      in >> cmd;
      if (cmd == "quit") break;
      if (cmd == "reset") {
        start_pos = 0;
        continue;
      }
      int n = 0;
      in >> n;
      std::vector<int> ids(n);
      for (int& id : ids) in >> id;
      if (start_pos + n > 64) {
        std::cerr << "sequence exceeds the compiled context of 64 tokens\n";
        return 3;
      }
      llmc::cycle_account() = 0;
      std::fill(llmc::opcode_cycles(), llmc::opcode_cycles() + llmc::OPCODE_SLOTS, 0);
      for (int done = 0; done < n;) {
        const int left = n - done;
        size_t which = 0;
        while (which + 1 < programs.size() && buckets[which] < left) ++which;
        const int rows = std::min(left, buckets[which]);
        for (int t = 0; t < rows; ++t) {
          io[(4 * t) / 64].range(8 * ((4 * t) % 64) + 31, 8 * ((4 * t) % 64)) = (uint32_t)ids[done + t];
        }
        llmc_accel(programs[which].data(), w0.data(), w1.data(), w2.data(), w3.data(), w4.data(), w5.data(), w6.data(), w7.data(),
                   kv0.data(), kv1.data(), kv2.data(), kv3.data(), kv4.data(), kv5.data(), kv6.data(), kv7.data(), kv8.data(), kv9.data(), kv10.data(), kv11.data(), kv12.data(), kv13.data(), kv14.data(), kv15.data(), kv16.data(), kv17.data(), kv18.data(), kv19.data(), kv20.data(), kv21.data(), kv22.data(), io.data(), (int)programs[which].size(), rows,
                   start_pos);
        logits.resize((size_t)rows * 96);
        for (size_t i = 0; i < logits.size(); ++i) {
          const size_t at = 512 + 4 * i;
          const uint32_t bits = (uint32_t)io[at / 64].range(8 * (at % 64) + 31, 8 * (at % 64));
          logits[i] = llmc::bits_to_float(bits);
        }
        std::fwrite(logits.data(), sizeof(float), logits.size(), stdout);
        start_pos += rows;
        done += rows;
      }
      // the call's cycle account: the total, then by opcode number (llmc_cycles.h)
      const uint64_t total = llmc::cycle_account();
      std::fwrite(&total, sizeof total, 1, stdout);
      std::fwrite(llmc::opcode_cycles(), sizeof(uint64_t), llmc::OPCODE_SLOTS, stdout);
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 2;
  }
  return 0;
}
