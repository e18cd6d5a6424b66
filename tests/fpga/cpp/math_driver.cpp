// Runs one function of llmc_math.h (or llmc_mem.h) over inputs read from stdin (raw little-endian arrays, in the order the
// function's case below takes them) and writes its outputs to stdout: math_driver <function> [int arguments].
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "llmc_math.h"
#include "llmc_mem.h"

namespace {

class Input {
 public:
  Input() {
    char buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, stdin)) > 0) data_.insert(data_.end(), buf, buf + n);
  }

  template <typename T>
  std::vector<T> take(size_t count) {
    if (pos_ + count * sizeof(T) > data_.size()) {
      std::fprintf(stderr, "input too short\n");
      std::exit(2);
    }
    std::vector<T> out(count);
    if (count) std::memcpy(out.data(), data_.data() + pos_, count * sizeof(T));
    pos_ += count * sizeof(T);
    return out;
  }

  // How many values of `bytes` bytes are left.
  size_t left(size_t bytes) const { return (data_.size() - pos_) / bytes; }

 private:
  std::vector<char> data_;
  size_t pos_ = 0;
};

template <typename T>
void emit(const std::vector<T>& v) {
  std::fwrite(v.data(), sizeof(T), v.size(), stdout);
}

// out[i] = f(in[i]) over all of stdin.
template <typename In, typename Out, typename F>
void map1(Input& in, F f) {
  const std::vector<In> a = in.take<In>(in.left(sizeof(In)));
  std::vector<Out> out(a.size());
  for (size_t i = 0; i < a.size(); ++i) out[i] = f(a[i]);
  emit(out);
}

// out[i] = f(a[i], b[i]) with stdin holding all of a, then all of b.
template <typename A, typename B, typename Out, typename F>
void map2(Input& in, F f) {
  const size_t n = in.left(sizeof(A) + sizeof(B));
  const std::vector<A> a = in.take<A>(n);
  const std::vector<B> b = in.take<B>(n);
  std::vector<Out> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
  emit(out);
}

// hw_matmul: x [t, k], codes [n, k], scales [n, k / group], then zeros, minimums and bias when present.
template <typename W>
void matmul(Input& in, int t, int n, int k, int group, int shift, bool has_zero, bool has_bias, bool has_min) {
  const int groups = k / group;
  const std::vector<int32_t> x = in.take<int32_t>(static_cast<size_t>(t) * k);
  const std::vector<W> codes = in.take<W>(static_cast<size_t>(n) * k);
  const std::vector<int32_t> scales = in.take<int32_t>(static_cast<size_t>(n) * groups);
  const std::vector<int16_t> zeros = in.take<int16_t>(has_zero ? static_cast<size_t>(n) * groups : 0);
  const std::vector<int32_t> mins = in.take<int32_t>(has_min ? static_cast<size_t>(n) * groups : 0);
  const std::vector<int32_t> bias = in.take<int32_t>(has_bias ? n : 0);
  std::vector<int8_t> xq(k);
  std::vector<int32_t> y(static_cast<size_t>(t) * n);
  for (int r = 0; r < t; ++r) {
    int32_t xs;
    llmc::quant8(&x[static_cast<size_t>(r) * k], k, k, xq.data(), &xs);
    llmc::matmul_row(xq.data(), xs, codes.data(), scales.data(), has_zero ? zeros.data() : nullptr,
                     has_min ? mins.data() : nullptr, has_bias ? bias.data() : nullptr, n, k, group, shift,
                     &y[static_cast<size_t>(r) * n]);
  }
  emit(y);
}

// hw_attention: scale (f32), q [t, heads * d], kc [s, kv_heads * d], ks [s, kv_heads], vc, vs; window 0 = none.
void attention(Input& in, int t, int s, int heads, int kv_heads, int d, int window) {
  const std::vector<float> scalars = in.take<float>(2);  // scale, softcap
  const float scale = scalars[0], softcap = scalars[1];
  const std::vector<int32_t> q = in.take<int32_t>(static_cast<size_t>(t) * heads * d);
  const std::vector<int8_t> kc = in.take<int8_t>(static_cast<size_t>(s) * kv_heads * d);
  const std::vector<int32_t> ks = in.take<int32_t>(static_cast<size_t>(s) * kv_heads);
  const std::vector<int8_t> vc = in.take<int8_t>(static_cast<size_t>(s) * kv_heads * d);
  const std::vector<int32_t> vs = in.take<int32_t>(static_cast<size_t>(s) * kv_heads);
  std::vector<int8_t> qc(d);
  std::vector<float> scores(s);
  std::vector<int32_t> out(q.size());
  for (int r = 0; r < t; ++r) {
    for (int h = 0; h < heads; ++h) {
      const size_t at = (static_cast<size_t>(r) * heads + h) * d;
      int32_t qs;
      llmc::quant8(&q[at], d, d, qc.data(), &qs);
      const int visible = s - t + r + 1;
      const int first = window > 0 && visible > window ? visible - window : 0;
      llmc::attention_row(qc.data(), qs, kc.data(), ks.data(), vc.data(), vs.data(), first, visible,
                          h / (heads / kv_heads), kv_heads, d, scale, softcap, scores.data(), &out[at]);
    }
  }
  emit(out);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const std::string fn = argv[1];
  std::vector<int> arg;
  for (int i = 2; i < argc; ++i) arg.push_back(std::atoi(argv[i]));
  Input in;
  if (fn == "exp2") {
    map1<float, float>(in, llmc::exp2_f32);
  } else if (fn == "tanh") {
    map1<float, float>(in, llmc::tanh_f32);
  } else if (fn == "to_fixed") {
    map1<float, int32_t>(in, llmc::to_fixed);
  } else if (fn == "fixed_to_f32") {
    map1<int32_t, float>(in, llmc::fixed_to_f32);
  } else if (fn == "saturate") {
    map1<int64_t, int32_t>(in, llmc::saturate);
  } else if (fn == "bit_length") {
    map1<int64_t, int32_t>(in, llmc::bit_length);
  } else if (fn == "div_round") {
    map2<int64_t, int64_t, int64_t>(in, llmc::div_round);
  } else if (fn == "shift_round") {
    map1<int64_t, int64_t>(in, [&](int64_t a) { return llmc::shift_round(a, arg[0]); });
  } else if (fn == "half_scale") {
    map1<uint16_t, int64_t>(in, [&](uint16_t h) { return llmc::half_scale(h, arg[0]); });
  } else if (fn == "quant8") {  // n group sum_group; rows of n values -> all codes, all scales, all code sums
    const int n = arg[0], group = arg[1], sum_group = arg[2];
    const size_t rows = in.left(sizeof(int32_t)) / n;
    const std::vector<int32_t> x = in.take<int32_t>(rows * n);
    std::vector<int8_t> codes(x.size());
    std::vector<int32_t> scales(rows * (n / group));
    std::vector<int32_t> sums(sum_group > 0 ? rows * (n / sum_group) : 0);
    for (size_t r = 0; r < rows; ++r) {
      llmc::quant8(&x[r * n], n, group, &codes[r * n], &scales[r * (n / group)], sum_group,
                   sum_group > 0 ? &sums[r * (n / sum_group)] : nullptr);
    }
    emit(codes);
    emit(scales);
    emit(sums);
  } else if (fn == "requantize") {
    map2<int64_t, int32_t, int32_t>(in, [&](int64_t total, int32_t xs) { return llmc::requantize(total, xs, arg[0]); });
  } else if (fn == "group_dot") {  // len zero; xq [len], w [len]
    const std::vector<int8_t> xq = in.take<int8_t>(arg[0]);
    const std::vector<int8_t> w = in.take<int8_t>(arg[0]);
    emit(std::vector<int64_t>{llmc::group_dot(xq.data(), w.data(), arg[0], arg[1])});
  } else if (fn == "matmul") {  // t n k group shift has_zero has_bias unsigned_codes has_min
    if (arg[7]) {
      matmul<uint8_t>(in, arg[0], arg[1], arg[2], arg[3], arg[4], arg[5], arg[6], arg[8]);
    } else {
      matmul<int8_t>(in, arg[0], arg[1], arg[2], arg[3], arg[4], arg[5], arg[6], arg[8]);
    }
  } else if (fn == "rms_norm") {  // t c; eps (f32), x [t, c], w [c]
    const int t = arg[0], c = arg[1];
    const float eps = in.take<float>(1)[0];
    const std::vector<int32_t> x = in.take<int32_t>(static_cast<size_t>(t) * c);
    const std::vector<float> w = in.take<float>(c);
    std::vector<int32_t> y(x.size());
    for (int r = 0; r < t; ++r) llmc::rms_norm_row(&x[static_cast<size_t>(r) * c], w.data(), c, eps, &y[r * c]);
    emit(y);
  } else if (fn == "layer_norm") {  // t c; eps (f32), x [t, c], w [c], b [c]
    const int t = arg[0], c = arg[1];
    const float eps = in.take<float>(1)[0];
    const std::vector<int32_t> x = in.take<int32_t>(static_cast<size_t>(t) * c);
    const std::vector<float> w = in.take<float>(c);
    const std::vector<float> b = in.take<float>(c);
    std::vector<int32_t> y(x.size());
    for (int r = 0; r < t; ++r) {
      llmc::layer_norm_row(&x[static_cast<size_t>(r) * c], w.data(), b.data(), c, eps, &y[r * c]);
    }
    emit(y);
  } else if (fn == "rope") {  // t c head_dim; x [t, c], cos [t, head_dim / 2], sin (rows of each token's position)
    const int t = arg[0], c = arg[1], half = arg[3] / 2;  // t c head_dim rotary_dim
    std::vector<int32_t> x = in.take<int32_t>(static_cast<size_t>(t) * c);
    const std::vector<int32_t> cs = in.take<int32_t>(static_cast<size_t>(t) * half);
    const std::vector<int32_t> sn = in.take<int32_t>(static_cast<size_t>(t) * half);
    for (int r = 0; r < t; ++r) {
      int32_t* row = &x[static_cast<size_t>(r) * c];
      llmc::rope_row(row, row, c, arg[2], arg[3], &cs[r * half], &sn[r * half]);
    }
    emit(x);
  } else if (fn == "attention") {  // t s heads kv_heads d window
    attention(in, arg[0], arg[1], arg[2], arg[3], arg[4], arg[5]);
  } else if (fn == "silu") {
    map1<int32_t, int32_t>(in, llmc::silu_fixed);
  } else if (fn == "gelu") {
    map1<int32_t, int32_t>(in, llmc::gelu_fixed);
  } else if (fn == "gelu_tanh") {
    map1<int32_t, int32_t>(in, llmc::gelu_tanh_fixed);
  } else if (fn == "relu") {
    map1<int32_t, int32_t>(in, llmc::relu_fixed);
  } else if (fn == "mul") {
    map2<int32_t, int32_t, int32_t>(in, llmc::mul_fixed);
  } else if (fn == "add") {
    map2<int32_t, int32_t, int32_t>(in, llmc::add_sat);
  } else if (fn == "scale") {
    map2<int32_t, float, int32_t>(in, llmc::scale_fixed);
  } else if (fn == "embed") {
    map1<float, int32_t>(in, llmc::embed_fixed);
  } else if (fn == "route") {  // t experts top_k normalize; logits [t, experts]
    const int t = arg[0], experts = arg[1], top_k = arg[2];
    const std::vector<int32_t> x = in.take<int32_t>(static_cast<size_t>(t) * experts);
    std::vector<int32_t> y(static_cast<size_t>(t) * 2 * top_k);
    for (int r = 0; r < t; ++r) llmc::route_row(&x[static_cast<size_t>(r) * experts], experts, top_k, arg[3] != 0,
                                                &y[static_cast<size_t>(r) * 2 * top_k]);
    emit(y);
  } else {
    std::fprintf(stderr, "unknown function %s\n", fn.c_str());
    return 2;
  }
  return 0;
}
