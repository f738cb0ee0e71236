#pragma once
/// \file serialization.hpp
/// Saving and loading `Sequential<T>` models: one versioned, checksummed,
/// little-endian binary file.
///
///     offset  size  field
///     0       8     magic "LOOMMODL"
///     8       4     format version (1)
///     12      4     flags: 1 = holds the training state, 2 = weights only
///     16      1     scalar size in bytes (4 float, 8 double)
///     17      8     payload length P
///     25      P     payload
///     25+P    4     CRC-32 (IEEE) of the payload
///
/// Payload of a model file: name, seed, input shape, the two random streams,
/// every layer (type, name, config as text pairs, its random stream), every
/// parameter and buffer (name, trainable, shape, values), and optionally the
/// training state: loss, metrics, optimizer (type, config, step count, slots),
/// the training position (epoch, batch, running sums, sample order) and the
/// history. A weights file holds the layer types and the parameters only.
///
/// Loading trusts nothing: every length is checked against the bytes that
/// are really there before anything is allocated or read, and the first
/// thing that does not match raises a FormatError that names the file.
/// Saving writes a temporary file in the same folder, flushes it to disk and
/// renames it into place, so a crash mid-save leaves the old file intact.

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../io.hpp"
#include "../layers/activation.hpp"
#include "../layers/batch_normalization.hpp"
#include "../layers/conv2d.hpp"
#include "../layers/dense.hpp"
#include "../layers/dropout.hpp"
#include "../layers/flatten.hpp"
#include "../layers/max_pool2d.hpp"
#include "sequential.hpp"

namespace loom {
namespace detail {

inline constexpr char kModelMagic[8] = {'L', 'O', 'O', 'M', 'M', 'O', 'D', 'L'};
inline constexpr std::uint32_t kModelFormatVersion = 1;
inline constexpr std::uint32_t kHasTraining = 1, kWeightsOnly = 2;
inline constexpr std::size_t kModelHeaderBytes = 8 + 4 + 4 + 1 + 8;

/// CRC-32 (IEEE 802.3, the one zlib and gzip use).
inline std::uint32_t crc32(const unsigned char* data, std::size_t n) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

/// Appends little-endian values to a byte string.
class ByteWriter {
 public:
  void u8(std::uint8_t v) { bytes.push_back(static_cast<char>(v)); }
  void u32(std::uint32_t v) { le(v, 4); }
  void u64(std::uint64_t v) { le(v, 8); }
  void i64(std::int64_t v) { le(static_cast<std::uint64_t>(v), 8); }
  void f64(double v) {
    std::uint64_t u;
    std::memcpy(&u, &v, 8);
    u64(u);
  }
  void str(const std::string& s) {
    u32(static_cast<std::uint32_t>(s.size()));
    bytes += s;
  }
  void shape(const Shape& s) {
    u8(static_cast<std::uint8_t>(s.rank()));
    for (Index d : s) i64(d);
  }
  template <class T>
  void values(const Tensor<T>& t) {
    for (T v : t) {
      if constexpr (sizeof(T) == 4) {
        std::uint32_t u;
        std::memcpy(&u, &v, 4);
        u32(u);
      } else {
        f64(static_cast<double>(v));
      }
    }
  }
  void config(const std::vector<std::pair<std::string, std::string>>& c) {
    u32(static_cast<std::uint32_t>(c.size()));
    for (const auto& kv : c) {
      str(kv.first);
      str(kv.second);
    }
  }
  void rng(const Rng::State& s) {
    for (auto v : s) u64(v);
  }

  std::string bytes;

 private:
  void le(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  }
};

/// Reads little-endian values, checking every length against what is left.
class ByteReader {
 public:
  ByteReader(std::string source, const unsigned char* data, std::size_t size)
      : source_(std::move(source)), p_(data), n_(size) {}

  [[noreturn]] void fail(const std::string& what) const { throw FormatError(source_ + ": " + what); }
  std::size_t remaining() const { return n_ - at_; }
  std::size_t offset() const { return at_; }

  std::uint8_t u8(const char* what) { return static_cast<std::uint8_t>(le(1, what)); }
  std::uint32_t u32(const char* what) { return static_cast<std::uint32_t>(le(4, what)); }
  std::uint64_t u64(const char* what) { return le(8, what); }
  std::int64_t i64(const char* what) { return static_cast<std::int64_t>(le(8, what)); }
  double f64(const char* what) {
    const std::uint64_t u = le(8, what);
    double v;
    std::memcpy(&v, &u, 8);
    return v;
  }
  std::string str(const char* what) {
    const std::uint32_t len = u32(what);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(p_ + at_), len);
    at_ += len;
    return s;
  }
  /// A shape whose elements (of `elem` bytes each) must fit in what is left.
  Shape shape(const char* what, std::size_t elem) {
    const unsigned rank = u8(what);
    if (rank > static_cast<unsigned>(Shape::max_rank)) fail(str_of("rank ", rank, " of ", what, " exceeds ", Shape::max_rank));
    Shape s;
    std::uint64_t count = 1;
    for (unsigned i = 0; i < rank; ++i) {
      const std::int64_t d = i64(what);
      if (d < 0 || d > (std::int64_t(1) << 40)) fail(str_of("dimension ", d, " of ", what, " is out of range"));
      count *= static_cast<std::uint64_t>(d);
      if (elem > 0 && count > remaining() / elem + 1) {
        fail(str_of(what, " claims more values than the file holds (truncated?)"));
      }
      s.push_back(static_cast<Index>(d));
    }
    return s;
  }
  template <class T>
  void values(Tensor<T>& t, const char* what) {
    need(static_cast<std::uint64_t>(t.size()) * sizeof(T), what);
    for (T& v : t) {
      if constexpr (sizeof(T) == 4) {
        const std::uint32_t u = static_cast<std::uint32_t>(le(4, what));
        std::memcpy(&v, &u, 4);
      } else {
        v = static_cast<T>(f64(what));
      }
    }
  }
  std::vector<std::pair<std::string, std::string>> config(const char* what) {
    const std::uint32_t n = u32(what);
    if (n > 64) fail(str_of(what, ": ", n, " entries, at most 64 expected"));
    std::vector<std::pair<std::string, std::string>> c;
    for (std::uint32_t i = 0; i < n; ++i) {
      std::string k = str(what);
      c.emplace_back(std::move(k), str(what));
    }
    return c;
  }
  Rng::State rng(const char* what) {
    Rng::State s;
    for (auto& v : s) v = u64(what);
    return s;
  }
  /// A count of items each at least `min_bytes` long: must fit in what is left.
  std::uint64_t count(const char* what, std::uint64_t min_bytes) {
    const std::uint64_t n = u64(what);
    if (min_bytes > 0 && n > remaining() / min_bytes) fail(str_of(what, ": count ", n, " exceeds what the file holds"));
    return n;
  }

  template <class... A>
  static std::string str_of(A&&... a) {
    return loom::detail::str(std::forward<A>(a)...);
  }

 private:
  void need(std::uint64_t bytes, const char* what) const {
    if (bytes > remaining()) {
      fail(str_of("truncated: ", what, " needs ", bytes, " bytes at offset ", at_, ", ", remaining(), " left"));
    }
  }
  std::uint64_t le(int n, const char* what) {
    need(static_cast<std::uint64_t>(n), what);
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= std::uint64_t(p_[at_ + static_cast<std::size_t>(i)]) << (8 * i);
    at_ += static_cast<std::size_t>(n);
    return v;
  }

  std::string source_;
  const unsigned char* p_;
  std::size_t n_, at_ = 0;
};

/// Looks up config values for rebuilding a layer; every miss is a FormatError.
class ConfigReader {
 public:
  ConfigReader(const ByteReader& r, std::string where, std::vector<std::pair<std::string, std::string>> c)
      : r_(r), where_(std::move(where)), c_(std::move(c)) {}
  bool has(const std::string& key) const { return find(key) != nullptr; }
  const std::string& text(const std::string& key) const {
    const std::string* v = find(key);
    if (!v) r_.fail(where_ + ": missing config '" + key + "'");
    return *v;
  }
  long long integer(const std::string& key) const { return parse_int(text(key), key); }
  std::uint64_t u64(const std::string& key) const {
    const std::string& s = text(key);
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
    if (s.empty() || s[0] == '-' || *end != '\0' || errno == ERANGE) bad(key, s);
    return v;
  }
  double real(const std::string& key) const {
    const std::string& s = text(key);
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0') bad(key, s);
    return v;
  }
  bool flag(const std::string& key) const {
    const std::string& s = text(key);
    if (s != "0" && s != "1") bad(key, s);
    return s == "1";
  }
  Size2 pair(const std::string& key) const {
    const std::string& s = text(key);
    const auto comma = s.find(',');
    if (comma == std::string::npos) bad(key, s);
    return {static_cast<Index>(parse_int(s.substr(0, comma), key)), static_cast<Index>(parse_int(s.substr(comma + 1), key))};
  }
  Padding padding() const {
    const std::string& s = text("padding");
    if (s != "same" && s != "valid") bad("padding", s);
    return s == "same" ? Padding::Same : Padding::Valid;
  }
  Activation activation() const {
    const std::string& s = text("activation");
    if (s == "relu") return Activation::ReLU;
    if (s == "softmax") return Activation::Softmax;
    if (s != "linear") bad("activation", s);
    return Activation::None;
  }

 private:
  const std::string* find(const std::string& key) const {
    for (const auto& kv : c_) {
      if (kv.first == key) return &kv.second;
    }
    return nullptr;
  }
  long long parse_int(const std::string& s, const std::string& key) const {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || errno == ERANGE || v < 0 || v > (1LL << 31)) bad(key, s);
    return v;
  }
  [[noreturn]] void bad(const std::string& key, const std::string& value) const {
    r_.fail(where_ + ": bad value '" + value + "' for config '" + key + "'");
  }

  const ByteReader& r_;
  std::string where_;
  std::vector<std::pair<std::string, std::string>> c_;
};

/// Rebuilds a layer from its type and config.
template <class T>
std::unique_ptr<Layer<T>> make_layer(const std::string& type, const ConfigReader& c, const ByteReader& r) {
  if (type == "Conv2D") {
    return std::make_unique<Conv2D<T>>(Conv2DOptions(c.integer("filters"), c.pair("kernel_size"))
                                           .strides(c.pair("strides"))
                                           .padding(c.padding())
                                           .activation(c.activation())
                                           .use_bias(c.flag("use_bias")));
  }
  if (type == "Dense") {
    return std::make_unique<Dense<T>>(
        DenseOptions(c.integer("units")).activation(c.activation()).use_bias(c.flag("use_bias")));
  }
  if (type == "BatchNormalization") {
    return std::make_unique<BatchNormalization<T>>(
        BatchNormalizationOptions().momentum(c.real("momentum")).epsilon(c.real("epsilon")));
  }
  if (type == "MaxPooling2D") {
    return std::make_unique<MaxPool2D<T>>(
        MaxPool2DOptions(c.pair("pool_size")).strides(c.pair("strides")).padding(c.padding()));
  }
  if (type == "Dropout") {
    std::optional<std::uint64_t> seed;
    if (c.has("seed")) seed = c.u64("seed");
    return std::make_unique<Dropout<T>>(c.real("rate"), seed);
  }
  if (type == "Flatten") return std::make_unique<Flatten<T>>();
  if (type == "ReLU") return std::make_unique<ReLU<T>>();
  if (type == "Softmax") return std::make_unique<Softmax<T>>();
  r.fail("unknown layer type '" + type + "'");
}

template <class T>
std::unique_ptr<Optimizer<T>> make_optimizer_from(const std::string& type, const ConfigReader& c, const ByteReader& r) {
  if (type == "RMSprop") {
    return std::make_unique<RMSprop<T>>(
        RMSpropOptions().learning_rate(c.real("learning_rate")).rho(c.real("rho")).epsilon(c.real("epsilon")));
  }
  if (type == "Adam") {
    return std::make_unique<Adam<T>>(AdamOptions()
                                         .learning_rate(c.real("learning_rate"))
                                         .beta_1(c.real("beta_1"))
                                         .beta_2(c.real("beta_2"))
                                         .epsilon(c.real("epsilon")));
  }
  if (type == "SGD") {
    return std::make_unique<SGD<T>>(
        SGDOptions().learning_rate(c.real("learning_rate")).momentum(c.real("momentum")).nesterov(c.flag("nesterov")));
  }
  r.fail("unknown optimizer type '" + type + "'");
}

template <class T>
std::unique_ptr<Loss<T>> make_loss_from(const std::string& type, const ByteReader& r) {
  if (type == "CategoricalCrossentropy") return std::make_unique<CategoricalCrossentropy<T>>();
  if (type == "SparseCategoricalCrossentropy") return std::make_unique<SparseCategoricalCrossentropy<T>>();
  r.fail("unknown loss type '" + type + "'");
}

/// Reads and writes model files. A friend of Sequential<T>.
template <class T>
struct ModelFile {
  static std::string write(const Sequential<T>& m, bool training, bool weights_only) {
    m.require_built("save");
    ByteWriter w;
    if (weights_only) {
      w.u32(static_cast<std::uint32_t>(m.layers_.size()));
      for (const auto& l : m.layers_) w.str(l->type());
    } else {
      w.str(m.name_);
      w.u64(m.seed_);
      w.shape(*m.input_shape_);
      w.rng(m.init_rng_.state());
      w.rng(m.train_rng_.state());
      w.u32(static_cast<std::uint32_t>(m.layers_.size()));
      for (const auto& l : m.layers_) {
        w.str(l->type());
        w.str(l->name());
        w.config(l->config());
        w.u8(l->has_rng() ? 1 : 0);
        if (l->has_rng()) w.rng(l->rng_state());
      }
    }
    write_parameters(w, m);
    const bool with_training = training && !weights_only && m.compiled();
    if (!weights_only) {
      w.u8(with_training ? 1 : 0);
      if (with_training) write_training(w, m);
    }
    return frame(w.bytes, (with_training ? kHasTraining : 0) | (weights_only ? kWeightsOnly : 0));
  }

  static Sequential<T> read(const std::string& bytes, const std::string& source) {
    std::uint32_t flags = 0;
    ByteReader r = unframe(bytes, source, flags);
    if (flags & kWeightsOnly) r.fail("this is a weights file (save_weights): use load_weights on a model of its architecture");
    const std::string name = r.str("model name");
    const std::uint64_t seed = r.u64("seed");
    const Shape input = r.shape("input shape", 0);
    double input_size = 1;
    for (Index d : input) input_size *= static_cast<double>(d);
    if (input.rank() == 0 || input_size < 1 || input_size > double(1 << 30)) {
      r.fail("input shape " + input.str() + " is empty or absurdly large");
    }
    Sequential<T> m(seed, name);
    const Rng::State init = r.rng("random state"), train = r.rng("random state");
    const std::uint32_t n_layers = r.u32("layer count");
    if (n_layers == 0 || n_layers > 4096) r.fail(ByteReader::str_of("layer count ", n_layers, " is not in [1, 4096]"));
    std::vector<std::pair<bool, Rng::State>> layer_rngs;
    for (std::uint32_t i = 0; i < n_layers; ++i) {
      const std::string type = r.str("layer type"), lname = r.str("layer name");
      const std::string where = ByteReader::str_of("layer ", i + 1, " '", lname, "' (", type, ")");
      const ConfigReader cfg(r, where, r.config("layer config"));
      std::unique_ptr<Layer<T>> layer;
      try {
        // The parameters this layer will allocate must be in the file: a header alone allocates nothing.
        const Shape in = i == 0 ? input : m.layers_.back()->output_shape();
        if (parameter_count(type, cfg, in) > static_cast<double>(r.remaining() / sizeof(T))) {
          r.fail(where + ": its parameters would need more values than the file holds");
        }
        layer = make_layer<T>(type, cfg, r);
        layer->set_name(lname);
        if (i == 0) {
          m.add(std::move(layer), input);
        } else {
          m.add(std::move(layer));
        }
      } catch (const FormatError&) {
        throw;
      } catch (const Error& e) {
        r.fail(where + ": " + e.what());
      }
      const bool has_rng = r.u8("layer random flag") != 0;
      layer_rngs.emplace_back(has_rng, has_rng ? r.rng("layer random state") : Rng::State{});
    }
    read_parameters(r, m);
    m.init_rng_.set_state(init);
    m.train_rng_.set_state(train);
    for (std::size_t i = 0; i < layer_rngs.size(); ++i) {
      if (layer_rngs[i].first) m.layers_[i]->set_rng_state(layer_rngs[i].second);
    }
    const bool with_training = r.u8("training flag") != 0;
    if (with_training != ((flags & kHasTraining) != 0)) r.fail("the training flag disagrees with the header");
    if (with_training) read_training(r, m);
    if (r.remaining() != 0) r.fail(ByteReader::str_of(r.remaining(), " unexpected bytes after the model"));
    return m;
  }

  static void read_weights(Sequential<T>& m, const std::string& bytes, const std::string& source) {
    m.require_built("load_weights");
    std::uint32_t flags = 0;
    ByteReader r = unframe(bytes, source, flags);
    if (!(flags & kWeightsOnly)) r.fail("this is a model file (save): use Sequential::load, or save_weights to make a weights file");
    const std::uint32_t n = r.u32("layer count");
    if (n != m.layers_.size()) {
      r.fail(ByteReader::str_of("the file holds ", n, " layers, the model has ", m.layers_.size()));
    }
    for (std::uint32_t i = 0; i < n; ++i) {
      const std::string type = r.str("layer type");
      if (type != m.layers_[i]->type()) {
        r.fail(ByteReader::str_of("layer ", i + 1, " is a ", type, " in the file, a ", m.layers_[i]->type(),
                                  " ('", m.layers_[i]->name(), "') in the model"));
      }
    }
    // Read into copies first: a file that fails halfway leaves the model as it was.
    std::vector<Tensor<T>> values;
    read_parameter_values(r, m, values);
    if (r.remaining() != 0) r.fail(ByteReader::str_of(r.remaining(), " unexpected bytes after the weights"));
    std::size_t i = 0;
    for (const auto& p : m.parameters()) *p.value = std::move(values[i++]);
  }

 private:
  /// The number of parameter values a layer of `type` will create for per-sample input `in`.
  static double parameter_count(const std::string& type, const ConfigReader& c, const Shape& in) {
    const double channels = in.rank() > 0 ? static_cast<double>(in.back()) : 0.0;
    if (type == "Conv2D") {
      const Size2 k = c.pair("kernel_size");
      const double filters = static_cast<double>(c.integer("filters"));
      return static_cast<double>(k[0]) * static_cast<double>(k[1]) * channels * filters + filters;
    }
    if (type == "Dense") return (static_cast<double>(in.size()) + 1) * static_cast<double>(c.integer("units"));
    if (type == "BatchNormalization") return 4 * channels;
    return 0;
  }

  static std::string frame(const std::string& payload, std::uint32_t flags) {
    ByteWriter w;
    w.bytes.append(kModelMagic, 8);
    w.u32(kModelFormatVersion);
    w.u32(flags);
    w.u8(static_cast<std::uint8_t>(sizeof(T)));
    w.u64(payload.size());
    w.bytes += payload;
    w.u32(crc32(reinterpret_cast<const unsigned char*>(payload.data()), payload.size()));
    return w.bytes;
  }

  static ByteReader unframe(const std::string& bytes, const std::string& source, std::uint32_t& flags) {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    ByteReader h(source, p, bytes.size());
    if (bytes.size() < 8 || std::memcmp(p, kModelMagic, 8) != 0) h.fail("not a loom model file (bad magic number)");
    if (bytes.size() < kModelHeaderBytes + 4) {
      h.fail(ByteReader::str_of("truncated: ", bytes.size(), " bytes, too short for a model file"));
    }
    for (int i = 0; i < 8; ++i) h.u8("magic");
    const std::uint32_t version = h.u32("format version");
    if (version != kModelFormatVersion) {
      h.fail(ByteReader::str_of("format version ", version, ", this loom reads version ", kModelFormatVersion));
    }
    flags = h.u32("flags");
    if (flags & ~(kHasTraining | kWeightsOnly)) h.fail(ByteReader::str_of("unknown flags ", flags));
    const unsigned scalar = h.u8("scalar size");
    if (scalar != sizeof(T)) {
      h.fail(ByteReader::str_of("saved with ", scalar == 4 ? "float" : scalar == 8 ? "double" : "an unknown scalar",
                                " parameters, loading as ", sizeof(T) == 4 ? "float" : "double"));
    }
    const std::uint64_t len = h.u64("payload length");
    if (h.remaining() < 4 || len != h.remaining() - 4) {
      h.fail(ByteReader::str_of(h.remaining() < len + 4 ? "truncated" : "too long", ": the header says ", len,
                                " bytes of data and a checksum, the file holds ", h.remaining()));
    }
    const unsigned char* payload = p + kModelHeaderBytes;
    std::uint32_t stored = 0;
    for (int i = 0; i < 4; ++i) stored |= std::uint32_t(payload[len + static_cast<std::size_t>(i)]) << (8 * i);
    if (crc32(payload, static_cast<std::size_t>(len)) != stored) h.fail("checksum mismatch: the file is corrupt");
    return ByteReader(source, payload, static_cast<std::size_t>(len));
  }

  static void write_parameters(ByteWriter& w, const Sequential<T>& m) {
    auto& mm = const_cast<Sequential<T>&>(m);  // parameters() caches views; nothing is modified
    const auto& params = mm.parameters();
    w.u32(static_cast<std::uint32_t>(params.size()));
    for (const auto& p : params) {
      w.str(p.name);
      w.u8(p.trainable() ? 1 : 0);
      w.shape(p.value->shape());
      w.values(*p.value);
    }
  }

  /// Reads every parameter into `values`, checking names, shapes and flags against the model's.
  static void read_parameter_values(ByteReader& r, Sequential<T>& m, std::vector<Tensor<T>>& values) {
    const auto& params = m.parameters();
    const std::uint32_t n = r.u32("parameter count");
    if (n != params.size()) r.fail(ByteReader::str_of("the file holds ", n, " parameters, the model has ", params.size()));
    for (const auto& p : params) {
      const std::string name = r.str("parameter name");
      const bool trainable = r.u8("parameter flag") != 0;
      const Shape shape = r.shape("parameter shape", sizeof(T));
      if (shape != p.value->shape() || trainable != p.trainable()) {
        r.fail(ByteReader::str_of("parameter '", name, "' ", shape, (trainable ? "" : " (buffer)"),
                                  " does not match the model's '", p.name, "' ", p.value->shape(),
                                  (p.trainable() ? "" : " (buffer)")));
      }
      Tensor<T> t(shape);
      r.values(t, "parameter values");
      values.push_back(std::move(t));
    }
  }

  static void read_parameters(ByteReader& r, Sequential<T>& m) {
    std::vector<Tensor<T>> values;
    read_parameter_values(r, m, values);
    std::size_t i = 0;
    for (const auto& p : m.parameters()) *p.value = std::move(values[i++]);
  }

  static void write_training(ByteWriter& w, const Sequential<T>& m) {
    w.str(m.loss_->type());
    w.u32(static_cast<std::uint32_t>(m.metrics_.size()));
    for (const auto& s : m.metrics_) w.str(s);
    const Optimizer<T>& opt = *m.optimizer_;
    w.str(opt.type());
    w.config(opt.config());
    w.i64(opt.iterations());
    w.u32(static_cast<std::uint32_t>(opt.slots().size()));
    for (const auto& s : opt.slots()) {
      w.str(s.name);
      w.shape(s.shape);
      w.u32(static_cast<std::uint32_t>(s.state.size()));
      for (const auto& t : s.state) w.values(t);
    }
    const auto& at = m.position_;
    w.i64(at.epoch);
    w.i64(at.step);
    w.f64(at.loss_sum);
    w.i64(at.correct);
    w.i64(at.seen);
    w.u64(m.order_.size());
    for (Index i : m.order_) w.i64(i);
    w.u32(static_cast<std::uint32_t>(m.history_.history.size()));
    for (const auto& kv : m.history_.history) {
      w.str(kv.first);
      w.u64(kv.second.size());
      for (double v : kv.second) w.f64(v);
    }
  }

  static void read_training(ByteReader& r, Sequential<T>& m) {
    const std::string loss = r.str("loss type");
    auto loss_ptr = make_loss_from<T>(loss, r);
    const std::uint32_t n_metrics = r.u32("metric count");
    if (n_metrics > 16) r.fail(ByteReader::str_of(n_metrics, " metrics, at most 16 expected"));
    std::vector<std::string> metrics;
    for (std::uint32_t i = 0; i < n_metrics; ++i) metrics.push_back(r.str("metric name"));
    const std::string opt_type = r.str("optimizer type");
    const ConfigReader cfg(r, "optimizer " + opt_type, r.config("optimizer config"));
    auto opt = make_optimizer_from<T>(opt_type, cfg, r);
    const std::int64_t iterations = r.i64("optimizer step count");
    const std::uint32_t n_slots = r.u32("optimizer slot count");
    std::vector<typename Optimizer<T>::Slot> slots;
    for (std::uint32_t i = 0; i < n_slots; ++i) {
      typename Optimizer<T>::Slot s;
      s.name = r.str("slot name");
      s.shape = r.shape("slot shape", sizeof(T));
      const std::uint32_t n_state = r.u32("slot state count");
      if (n_state > 4) r.fail(ByteReader::str_of("slot '", s.name, "' has ", n_state, " state tensors, at most 4"));
      for (std::uint32_t j = 0; j < n_state; ++j) {
        Tensor<T> t(s.shape);
        r.values(t, "slot values");
        s.state.push_back(std::move(t));
      }
      slots.push_back(std::move(s));
    }
    try {
      m.compile(std::move(loss_ptr), std::move(opt), metrics);
      m.prepare_training();  // builds the optimizer for this architecture
      if (!slots.empty()) {
        check_slots(r, m, slots);
        m.optimizer_->restore(std::move(slots), iterations);
      } else if (iterations != 0) {
        r.fail("the optimizer has taken steps but holds no state");
      }
    } catch (const FormatError&) {
      throw;
    } catch (const Error& e) {
      r.fail(std::string("training state: ") + e.what());
    }
    auto& at = m.position_;
    at.epoch = static_cast<int>(r.i64("epoch"));
    at.step = static_cast<long>(r.i64("batch"));
    at.loss_sum = r.f64("running loss");
    at.correct = static_cast<Index>(r.i64("running correct count"));
    at.seen = static_cast<Index>(r.i64("running sample count"));
    if (at.epoch < 0 || at.step < 0 || at.correct < 0 || at.seen < at.correct) r.fail("the training position is inconsistent");
    const std::uint64_t n = r.count("sample order", 8);
    std::vector<char> used(static_cast<std::size_t>(n), 0);
    m.order_.assign(static_cast<std::size_t>(n), 0);
    for (auto& i : m.order_) {
      const std::int64_t v = r.i64("sample order");
      if (v < 0 || static_cast<std::uint64_t>(v) >= n || used[static_cast<std::size_t>(v)]) {
        r.fail("the sample order is not a permutation");
      }
      used[static_cast<std::size_t>(v)] = 1;
      i = static_cast<Index>(v);
    }
    const std::uint32_t n_keys = r.u32("history size");
    if (n_keys > 64) r.fail(ByteReader::str_of("history has ", n_keys, " metrics, at most 64 expected"));
    for (std::uint32_t k = 0; k < n_keys; ++k) {
      const std::string key = r.str("history key");
      const std::uint64_t len = r.count("history length", 8);
      auto& values = m.history_.history[key];
      for (std::uint64_t i = 0; i < len; ++i) values.push_back(r.f64("history value"));
    }
  }

  /// The saved optimizer slots must be the model's trainable parameters, in order.
  static void check_slots(const ByteReader& r, Sequential<T>& m, const std::vector<typename Optimizer<T>::Slot>& slots) {
    std::size_t i = 0;
    for (const auto& p : m.parameters()) {
      if (!p.trainable()) continue;
      if (i >= slots.size() || slots[i].name != p.name || slots[i].shape != p.value->shape()) {
        r.fail("optimizer state does not match parameter '" + p.name + "'");
      }
      ++i;
    }
    if (i != slots.size()) r.fail(ByteReader::str_of("optimizer state has ", slots.size(), " slots for ", i, " parameters"));
  }
};

}  // namespace detail

template <class T>
std::string Sequential<T>::to_bytes(bool include_optimizer) const {
  return detail::ModelFile<T>::write(*this, include_optimizer, false);
}

template <class T>
void Sequential<T>::save(const std::string& path, bool include_optimizer) const {
  write_file_atomically(path, to_bytes(include_optimizer));
}

template <class T>
Sequential<T> Sequential<T>::load_bytes(const std::string& bytes, const std::string& source) {
  return detail::ModelFile<T>::read(bytes, source);
}

template <class T>
Sequential<T> Sequential<T>::load(const std::string& path) {
  return load_bytes(detail::read_whole_file(path), path);
}

template <class T>
void Sequential<T>::save_weights(const std::string& path) const {
  write_file_atomically(path, detail::ModelFile<T>::write(*this, false, true));
}

template <class T>
void Sequential<T>::load_weights(const std::string& path) {
  detail::ModelFile<T>::read_weights(*this, detail::read_whole_file(path), path);
}

}  // namespace loom
