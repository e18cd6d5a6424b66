// Runs the C++ models of llmc's RTL units over beats read from stdin and writes their int32 results to stdout.
//   model_driver stream UNIT       beats of UNIT's black box (each ceil(bits / 8) little-endian bytes), one result
//                                  per group, through the generated UNIT_hls function
// The including build defines LLMC_UNITS(X) as X(function, beat_bits) for every generated black box it includes.
#include <ap_int.h>
#include <hls_stream.h>

#include <cstdio>
#include <string>
#include <vector>

#include "units.inc"

namespace {

std::vector<uint8_t> read_all() {
  std::vector<uint8_t> data;
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, stdin)) > 0) data.insert(data.end(), buf, buf + n);
  return data;
}

template <int W>
void run_stream(void (*unit)(hls::stream<ap_uint<W> >&, hls::stream<ap_int<32> >&), const std::vector<uint8_t>& data) {
  const size_t bytes = (W + 7) / 8;
  hls::stream<ap_uint<W> > in;
  hls::stream<ap_int<32> > out;
  int groups = 0;
  for (size_t at = 0; at + bytes <= data.size(); at += bytes) {
    ap_uint<W> beat = 0;
    for (size_t i = 0; i < bytes; ++i) beat |= ap_uint<W>(data[at + i]) << (8 * i);
    in.write(beat);
    if (beat[W - 1]) ++groups;
  }
  for (int g = 0; g < groups; ++g) {
    unit(in, out);
    const int32_t result = out.read().to_int();
    std::fwrite(&result, sizeof result, 1, stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || std::string(argv[1]) != "stream") return 2;
  const std::string name = argv[2];
  const std::vector<uint8_t> data = read_all();
#define LLMC_RUN(function, bits)      \
  if (name == #function) {            \
    run_stream<bits>(function, data); \
    return 0;                         \
  }
  LLMC_UNITS(LLMC_RUN)
  return 2;
}
