// Runs the C++ models of llmc's RTL units over inputs read from stdin and writes int32 (stream) or int64 (tile)
// results to stdout.
//   model_driver stream UNIT       beats of UNIT's black box (each ceil(bits / 8) little-endian bytes), one result
//                                  per group, through the generated UNIT_hls function
//   model_driver sparse V L N M S  x int8 [V, L], then a sparse tile (pack.py) of V rows: sparse_mac_group per row
//   model_driver lut V L G B       x int8 [V, L], zeros int32 [V], then B bit-planes of V rows: lut_mac_group per row
// The including build defines LLMC_UNITS(X) as X(function, beat_bits) for every generated black box it includes.
#include <ap_int.h>
#include <hls_stream.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "llmc_lut_mac.h"
#include "llmc_sparse_mac.h"
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

void write64(int64_t v) { std::fwrite(&v, sizeof v, 1, stdout); }

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const std::string mode = argv[1];
  const std::vector<uint8_t> data = read_all();
  if (mode == "stream") {
    const std::string name = argv[2];
#define LLMC_RUN(function, bits) \
  if (name == #function) {       \
    run_stream<bits>(function, data); \
    return 0;                    \
  }
    LLMC_UNITS(LLMC_RUN)
    return 2;
  }
  const int v = std::atoi(argv[2]), l = std::atoi(argv[3]);
  const int8_t* x = reinterpret_cast<const int8_t*>(data.data());
  if (mode == "sparse" && argc == 7) {
    const int n = std::atoi(argv[4]), m = std::atoi(argv[5]), stored = std::atoi(argv[6]);
    const int64_t kept = static_cast<int64_t>(v) * (l / m) * n;
    const uint8_t* values = data.data() + static_cast<size_t>(v) * l;
    const uint8_t* indices = values + kept * stored / 8;
    for (int r = 0; r < v; ++r) {
      write64(llmc::sparse_mac_group(x + static_cast<size_t>(r) * l, values, indices,
                                     static_cast<int64_t>(r) * (l / m) * n, l / m, n, m, stored));
    }
    return 0;
  }
  if (mode == "lut" && argc == 6) {
    const int g = std::atoi(argv[4]), bits = std::atoi(argv[5]);
    int32_t zero;
    const uint8_t* zeros = data.data() + static_cast<size_t>(v) * l;
    const uint8_t* planes = zeros + static_cast<size_t>(v) * 4;
    const int64_t plane_bytes = (static_cast<int64_t>(v) * l + 7) / 8;
    for (int r = 0; r < v; ++r) {
      std::memcpy(&zero, zeros + 4 * r, 4);
      write64(llmc::lut_mac_group(x + static_cast<size_t>(r) * l, planes, plane_bytes, static_cast<int64_t>(r) * l,
                                  l / g, g, bits, zero));
    }
    return 0;
  }
  return 2;
}
