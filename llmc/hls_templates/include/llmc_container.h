// Reader of llmc's binary container (program.bin, weights.bin), the format of llmc/backends/fpga/container.py:
//   header   "LLMCBIN\0", u16 major, u16 minor, u32 kind, u32 section count, u32 reserved, u64 metadata length
//   metadata UTF-8 JSON
//   table    per section: name (48 bytes, NUL padded), u64 offset, u64 size, SHA-256 of the payload
//   checksum SHA-256 of header + metadata + table
//   payloads at offsets aligned to 4096 bytes
// All integers little endian. Plain C++17; every check failure throws std::runtime_error naming the file.
#ifndef LLMC_CONTAINER_H
#define LLMC_CONTAINER_H

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "llmc_sha256.h"

namespace llmc {

namespace detail {

template <typename T>
T load_le(const uint8_t* p) {
  T value = 0;
  for (size_t i = 0; i < sizeof(T); ++i) value = static_cast<T>(value | static_cast<T>(T{p[i]} << (8 * i)));
  return value;
}

// Just enough JSON to look up a value by a dotted path of object keys ("io.ids_offset").
class JsonCursor {
 public:
  explicit JsonCursor(const std::string& text) : s_(text) {}

  // Moves to the value at `path`; false when a key is missing or a parent is not an object.
  bool seek(const std::string& path) {
    pos_ = 0;
    size_t start = 0;
    while (true) {
      const size_t dot = path.find('.', start);
      const std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      if (!member(key)) return false;
      if (dot == std::string::npos) return true;
      start = dot + 1;
    }
  }

  std::string string() {
    space();
    expect('"');
    std::string out;
    while (true) {
      const char c = next();
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      const char e = next();
      switch (e) {
        case '"': case '\\': case '/': out += e; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': utf8(out, code_point()); break;
        default: bad();
      }
    }
  }

  int64_t integer() {
    space();
    const size_t start = pos_;
    while (pos_ < s_.size() && (s_[pos_] == '-' || (s_[pos_] >= '0' && s_[pos_] <= '9'))) ++pos_;
    if (pos_ < s_.size() && (s_[pos_] == '.' || s_[pos_] == 'e' || s_[pos_] == 'E')) bad();
    try {
      size_t used = 0;
      const int64_t value = std::stoll(s_.substr(start, pos_ - start), &used);
      if (used != pos_ - start) bad();
      return value;
    } catch (const std::logic_error&) {
      bad();
    }
  }

 private:
  [[noreturn]] static void bad() { throw std::runtime_error("malformed or unexpected JSON value"); }

  char next() {
    if (pos_ >= s_.size()) bad();
    return s_[pos_++];
  }
  void expect(char c) {
    if (next() != c) bad();
  }
  bool eat(char c) {
    space();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }

  // In the object at the cursor, moves to the value of `key`.
  bool member(const std::string& key) {
    if (!eat('{')) return false;
    if (eat('}')) return false;
    do {
      const std::string name = string();
      space();
      expect(':');
      if (name == key) return true;
      skip();
    } while (eat(','));
    return false;
  }

  void skip() {
    space();
    const char c = pos_ < s_.size() ? s_[pos_] : '\0';
    if (c == '"') {
      string();
    } else if (c == '{' || c == '[') {
      ++pos_;
      const char close = c == '{' ? '}' : ']';
      if (eat(close)) return;
      do {
        if (c == '{') {
          string();
          space();
          expect(':');
        }
        skip();
      } while (eat(','));
      if (!eat(close)) bad();
    } else {  // number, true, false, null
      const size_t start = pos_;
      while (pos_ < s_.size() && std::strchr(",]} \t\n\r", s_[pos_]) == nullptr) ++pos_;
      if (pos_ == start) bad();
    }
  }

  uint32_t hex4() {
    uint32_t value = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = next();
      const uint32_t digit = c >= '0' && c <= '9'   ? static_cast<uint32_t>(c - '0')
                             : c >= 'a' && c <= 'f' ? static_cast<uint32_t>(c - 'a' + 10)
                             : c >= 'A' && c <= 'F' ? static_cast<uint32_t>(c - 'A' + 10)
                                                    : 16;
      if (digit == 16) bad();
      value = value * 16 + digit;
    }
    return value;
  }

  // A \u escape (after the "\u"), joining a UTF-16 surrogate pair.
  uint32_t code_point() {
    const uint32_t high = hex4();
    if (high < 0xD800 || high > 0xDBFF) return high;
    expect('\\');
    expect('u');
    const uint32_t low = hex4();
    if (low < 0xDC00 || low > 0xDFFF) bad();
    return 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
  }

  static void utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  const std::string& s_;
  size_t pos_ = 0;
};

}  // namespace detail

class Container {
 public:
  static constexpr uint32_t kProgram = 1;
  static constexpr uint32_t kWeights = 2;
  static constexpr uint16_t kMajor = 1;

  // Reads and verifies the container at `path`, which must be of `kind` (kProgram or kWeights).
  static Container open(const std::string& path, uint32_t kind) {
    Container c;
    c.path_ = path;
    std::ifstream in(path, std::ios::binary);
    if (!in) c.fail("cannot open");
    in.seekg(0, std::ios::end);
    const uint64_t size = static_cast<uint64_t>(in.tellg());
    in.seekg(0);

    uint8_t h[kHeaderBytes] = {};
    if (size < kHeaderBytes || !in.read(reinterpret_cast<char*>(h), kHeaderBytes) ||
        std::memcmp(h, "LLMCBIN\0", 8) != 0) {
      c.fail("not an llmc container (bad magic)");
    }
    const auto major = detail::load_le<uint16_t>(h + 8), minor = detail::load_le<uint16_t>(h + 10);
    const auto found = detail::load_le<uint32_t>(h + 12), count = detail::load_le<uint32_t>(h + 16);
    const auto meta_len = detail::load_le<uint64_t>(h + 24);
    if (major != kMajor) {
      c.fail("format version " + std::to_string(major) + "." + std::to_string(minor) +
             (major > kMajor ? " is newer than this reader (1.x)" : " is not supported (this reader reads 1.x)"));
    }
    if (meta_len > size || count > size / kEntryBytes ||
        kHeaderBytes + meta_len + uint64_t{count} * kEntryBytes + 32 > size) {
      c.fail("truncated header");
    }
    std::vector<uint8_t> head(kHeaderBytes + meta_len + size_t{count} * kEntryBytes + 32);
    in.seekg(0);
    if (!in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()))) {
      c.fail("cannot read the header");
    }
    const size_t head_end = head.size() - 32;
    const Sha256::Digest head_sum = sha256(head.data(), head_end);
    if (std::memcmp(head_sum.data(), head.data() + head_end, 32) != 0) c.fail("header checksum mismatch (file corrupted?)");
    if (found != kind) c.fail("is a " + kind_name(found) + " container, expected " + kind_name(kind));
    c.metadata_.assign(reinterpret_cast<const char*>(head.data() + kHeaderBytes), meta_len);

    for (uint32_t i = 0; i < count; ++i) {
      const uint8_t* e = head.data() + kHeaderBytes + meta_len + size_t{i} * kEntryBytes;
      const char* raw = reinterpret_cast<const char*>(e);
      const std::string name(raw, std::find(raw, raw + 48, '\0'));
      const auto offset = detail::load_le<uint64_t>(e + 48), length = detail::load_le<uint64_t>(e + 56);
      if (c.sections_.count(name) != 0) c.fail("section '" + name + "' appears twice");
      if (offset < head.size() || offset > size || length > size - offset) {
        c.fail("section '" + name + "' lies outside the file");
      }
      std::vector<uint8_t> payload(length);
      in.seekg(static_cast<std::streamoff>(offset));
      if (!in.read(reinterpret_cast<char*>(payload.data()), static_cast<std::streamsize>(length))) {
        c.fail("cannot read section '" + name + "'");
      }
      const Sha256::Digest sum = sha256(payload.data(), payload.size());
      if (std::memcmp(sum.data(), e + 64, 32) != 0) c.fail("section '" + name + "' checksum mismatch (file corrupted?)");
      c.names_.push_back(name);
      c.sections_.emplace(name, std::move(payload));
    }
    return c;
  }

  const std::string& path() const { return path_; }
  const std::string& metadata() const { return metadata_; }
  const std::vector<std::string>& names() const { return names_; }  // in file order
  bool has(const std::string& name) const { return sections_.count(name) != 0; }

  const std::vector<uint8_t>& section(const std::string& name) const {
    const auto it = sections_.find(name);
    if (it == sections_.end()) fail("no section '" + name + "'");
    return it->second;
  }

  // An integer or string of the metadata at a dotted key path, e.g. meta_int("io.ids_offset").
  int64_t meta_int(const std::string& key) const {
    return meta<int64_t>(key, "an integer", [](detail::JsonCursor& json) { return json.integer(); });
  }
  std::string meta_string(const std::string& key) const {
    return meta<std::string>(key, "a string", [](detail::JsonCursor& json) { return json.string(); });
  }

 private:
  static constexpr size_t kHeaderBytes = 32;
  static constexpr size_t kEntryBytes = 96;

  static std::string kind_name(uint32_t kind) {
    return kind == kProgram ? "program" : kind == kWeights ? "weights" : "kind " + std::to_string(kind);
  }

  [[noreturn]] void fail(const std::string& what) const { throw std::runtime_error(path_ + ": " + what); }

  template <typename T, typename Read>
  T meta(const std::string& key, const char* what, Read read) const {
    detail::JsonCursor json(metadata_);
    bool found = false;
    try {
      found = json.seek(key);
      if (found) return read(json);
    } catch (const std::runtime_error&) {
      fail(found ? "metadata '" + key + "' is not " + what : std::string("malformed metadata JSON"));
    }
    fail("metadata has no key '" + key + "'");
  }

  std::string path_;
  std::string metadata_;
  std::vector<std::string> names_;
  std::map<std::string, std::vector<uint8_t>> sections_;
};

}  // namespace llmc

#endif  // LLMC_CONTAINER_H
