// llmc_mem.h's port access at one port width (-DLLMC_PORT_BITS=128, 256 or 512), driven from Python.
// stdin: uint32 size, size bytes of memory, uint32 count, count x (uint32 off, uint32 n). For each (off, n) it
// reads n bytes at off (read_bytes), writes them to stdout, then writes them back reversed at off (write_bytes).
// Then it writes the whole memory to stdout.
#include "llmc_mem.h"

#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

uint32_t read_u32() {
  uint8_t b[4];
  if (std::fread(b, 1, 4, stdin) != 4) std::exit(2);
  return llmc::load_u32(b);
}

}  // namespace

int main() {
  const int per = llmc::PORT_BITS / 8;
  const uint32_t size = read_u32();
  std::vector<uint8_t> bytes(size);
  if (std::fread(bytes.data(), 1, size, stdin) != size) return 2;
  std::vector<llmc::port_t> memory(size / per);
  for (uint32_t i = 0; i < size; ++i) memory[i / per].range(8 * (i % per) + 7, 8 * (i % per)) = bytes[i];
  const uint32_t count = read_u32();
  for (uint32_t c = 0; c < count; ++c) {
    const uint32_t off = read_u32(), n = read_u32();
    std::vector<uint8_t> got(n), back(n);
    llmc::read_bytes(memory.data(), off, got.data(), (int)n);
    std::fwrite(got.data(), 1, n, stdout);
    for (uint32_t i = 0; i < n; ++i) back[i] = got[n - 1 - i];
    llmc::write_bytes(memory.data(), off, back.data(), (int)n);
  }
  for (uint32_t i = 0; i < size; ++i) bytes[i] = (uint8_t)memory[i / per].range(8 * (i % per) + 7, 8 * (i % per));
  std::fwrite(bytes.data(), 1, size, stdout);
  return 0;
}
