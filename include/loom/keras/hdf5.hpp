#pragma once
/// \file hdf5.hpp
/// A thin, checked C++ face on the HDF5 C library, for the Keras formats:
/// open a file from disk or from bytes in memory, walk groups, read and
/// write string attributes (fixed- or variable-length, scalar or arrays) and
/// float datasets of any rank. Every failure is a `FormatError` (reading) or
/// `IOError` (writing) that names the object; HDF5's own error printing is
/// switched off.
///
/// Needs the HDF5 C library (Debian's libhdf5-dev): link `loom::keras`.
/// The HDF5 library is not hardened against hostile files; see docs/keras.md.

#include <hdf5.h>

#include <atomic>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "../tensor.hpp"

namespace loom::keras::hdf5 {

namespace detail {

/// HDF5 prints every error to stderr unless told not to: loom reports its own.
inline void quiet() {
  static const bool done = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
}

/// Owns one hid_t and closes it with the right function.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer close) : id_(id), close_(close) {}
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, -1)), close_(o.close_) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, -1);
      close_ = o.close_;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = -1;
  }
  hid_t id_ = -1;
  Closer close_ = nullptr;
};

inline Handle checked(hid_t id, Handle::Closer close, const std::string& what) {
  if (id < 0) throw FormatError(what);
  return Handle(id, close);
}

/// A string type for memory: variable-length, or `size` bytes.
inline Handle string_type(bool variable, std::size_t size, H5T_cset_t cset) {
  Handle t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t.get(), variable ? H5T_VARIABLE : size);
  H5Tset_cset(t.get(), cset);
  return t;
}

/// A name for a file that lives only in memory. HDF5 treats two open files of
/// the same name as one, so every in-memory file gets its own; and a name that
/// exists on disk makes HDF5 look at it, so none is a real path.
inline std::string memory_file_name() {
  static std::atomic<unsigned long> counter{0};
  return "loom-in-memory-hdf5-" + std::to_string(++counter);
}

inline Handle link_creation_with_parents() {
  Handle p(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(p.get(), 1);
  return p;
}

}  // namespace detail

/// A group (or a file's root group), with the path used in messages.
class Group {
 public:
  Group(detail::Handle h, std::string path) : h_(std::move(h)), path_(std::move(path)) {}
  const std::string& path() const { return path_; }
  hid_t id() const { return h_.get(); }

  /// Whether `name` (a path relative to this group, "a/b/c") names an object.
  bool has(const std::string& name) const {
    std::string prefix;
    std::size_t start = 0;
    while (start <= name.size()) {
      const std::size_t slash = name.find('/', start);
      prefix = name.substr(0, slash);
      if (prefix.empty() || H5Lexists(id(), prefix.c_str(), H5P_DEFAULT) <= 0) return false;
      if (slash == std::string::npos) return true;
      start = slash + 1;
    }
    return false;
  }
  bool has_group(const std::string& name) const {
    if (!has(name)) return false;
    H5O_info_t info;
    return H5Oget_info_by_name(id(), name.c_str(), &info, H5P_DEFAULT) >= 0 && info.type == H5O_TYPE_GROUP;
  }

  Group group(const std::string& name) const {
    if (!has_group(name)) throw FormatError("HDF5: no group '" + child(name) + "'");
    return Group(detail::checked(H5Gopen2(id(), name.c_str(), H5P_DEFAULT), H5Gclose, "HDF5: cannot open " + child(name)),
                 child(name));
  }
  Group create_group(const std::string& name) {
    auto lcpl = detail::link_creation_with_parents();
    hid_t g = H5Gcreate2(id(), name.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) throw IOError("HDF5: cannot create group " + child(name));
    return Group(detail::Handle(g, H5Gclose), child(name));
  }

  /// The names of this group's direct members, in HDF5's name order.
  std::vector<std::string> members() const {
    H5G_info_t info;
    if (H5Gget_info(id(), &info) < 0) throw FormatError("HDF5: cannot list " + path_);
    std::vector<std::string> names;
    for (hsize_t i = 0; i < info.nlinks; ++i) {
      const ssize_t n = H5Lget_name_by_idx(id(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
      if (n < 0) throw FormatError("HDF5: cannot list " + path_);
      std::string s(static_cast<std::size_t>(n), '\0');
      H5Lget_name_by_idx(id(), ".", H5_INDEX_NAME, H5_ITER_INC, i, s.data(), s.size() + 1, H5P_DEFAULT);
      names.push_back(std::move(s));
    }
    return names;
  }

  bool has_attribute(const std::string& name) const { return H5Aexists(id(), name.c_str()) > 0; }

  /// A string attribute, or an array of strings (fixed- or variable-length,
  /// any character set). An empty numeric array (how h5py stores `[]`)
  /// reads as no strings.
  std::vector<std::string> strings(const std::string& name) const {
    const std::string what = "HDF5: attribute '" + name + "' of " + path_;
    if (!has_attribute(name)) throw FormatError(what + " is missing");
    auto attr = detail::checked(H5Aopen(id(), name.c_str(), H5P_DEFAULT), H5Aclose, what + " cannot be opened");
    auto type = detail::checked(H5Aget_type(attr.get()), H5Tclose, what + " has no type");
    auto space = detail::checked(H5Aget_space(attr.get()), H5Sclose, what + " has no dataspace");
    const hssize_t count = H5Sget_simple_extent_npoints(space.get());
    if (count < 0) throw FormatError(what + " has a bad dataspace");
    const auto n = static_cast<std::size_t>(count);
    if (H5Tget_class(type.get()) != H5T_STRING) {
      if (n == 0) return {};
      throw FormatError(what + " is not a string");
    }
    if (n > (std::size_t{1} << 24)) throw FormatError(what + " holds too many strings");
    const H5T_cset_t cset = H5Tget_cset(type.get());
    std::vector<std::string> out;
    out.reserve(n);
    if (H5Tis_variable_str(type.get()) > 0) {
      auto mem = detail::string_type(true, 0, cset);
      std::vector<char*> ptrs(n, nullptr);
      if (n && H5Aread(attr.get(), mem.get(), ptrs.data()) < 0) throw FormatError(what + " cannot be read");
      for (char* p : ptrs) out.emplace_back(p ? p : "");
      if (n) H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, ptrs.data());
    } else {
      const std::size_t size = H5Tget_size(type.get());
      if (size == 0 || size > (std::size_t{1} << 24) / (n ? n : 1)) throw FormatError(what + " has a bad string size");
      auto mem = detail::string_type(false, size, cset);
      H5Tset_strpad(mem.get(), H5T_STR_NULLPAD);  // all `size` bytes are text (numpy's 'S' strings)
      std::vector<char> buf(n * size, '\0');
      if (n && H5Aread(attr.get(), mem.get(), buf.data()) < 0) throw FormatError(what + " cannot be read");
      for (std::size_t i = 0; i < n; ++i) {
        const char* s = buf.data() + i * size;
        out.emplace_back(s, strnlen(s, size));
      }
    }
    return out;
  }
  /// A scalar string attribute (an array of one string is taken too).
  std::string string(const std::string& name) const {
    auto v = strings(name);
    if (v.size() != 1) throw FormatError("HDF5: attribute '" + name + "' of " + path_ + " is not one string");
    return v[0];
  }
  /// Keras's chunked string arrays: `name`, or `name0`, `name1`, ... when
  /// the list was too long for one attribute (legacy_h5_format.py).
  std::vector<std::string> chunked_strings(const std::string& name) const {
    if (has_attribute(name)) return strings(name);
    std::vector<std::string> all;
    for (int chunk = 0; has_attribute(name + std::to_string(chunk)); ++chunk) {
      auto part = strings(name + std::to_string(chunk));
      all.insert(all.end(), part.begin(), part.end());
    }
    return all;
  }

  /// Writes a variable-length UTF-8 string attribute (scalar).
  void set_string(const std::string& name, const std::string& value) {
    auto type = detail::string_type(true, 0, H5T_CSET_UTF8);
    detail::Handle space(H5Screate(H5S_SCALAR), H5Sclose);
    auto attr = create_attribute(name, type.get(), space.get());
    const char* p = value.c_str();
    if (H5Awrite(attr.get(), type.get(), &p) < 0) throw IOError("HDF5: cannot write attribute " + name);
  }
  /// Writes an array of variable-length UTF-8 strings; an empty list is
  /// written as h5py writes `[]` (an empty float64 array).
  void set_strings(const std::string& name, const std::vector<std::string>& values) {
    const hsize_t n = values.size();
    detail::Handle space(H5Screate_simple(1, &n, nullptr), H5Sclose);
    if (values.empty()) {
      auto attr = create_attribute(name, H5T_IEEE_F64LE, space.get());
      return;
    }
    auto type = detail::string_type(true, 0, H5T_CSET_UTF8);
    auto attr = create_attribute(name, type.get(), space.get());
    std::vector<const char*> ptrs;
    for (const auto& v : values) ptrs.push_back(v.c_str());
    if (H5Awrite(attr.get(), type.get(), ptrs.data()) < 0) throw IOError("HDF5: cannot write attribute " + name);
  }

  /// The dims of dataset `name` (relative path).
  std::vector<Index> dataset_shape(const std::string& name) const {
    auto ds = open_dataset(name);
    return dims(ds, name);
  }

  /// Reads float dataset `name` into `out`, which must have its shape
  /// (FormatError naming both shapes otherwise). Any float type converts.
  template <class T>
  void read(const std::string& name, Tensor<T>& out) const {
    auto ds = open_dataset(name);
    const std::vector<Index> d = dims(ds, name);
    Index size = 1;
    for (Index v : d) size *= v;
    const bool same = static_cast<Index>(d.size()) == out.rank() && size == out.size() &&
                      [&] {
                        for (std::size_t i = 0; i < d.size(); ++i)
                          if (d[i] != out.dim(static_cast<Index>(i))) return false;
                        return true;
                      }();
    if (!same) throw FormatError("HDF5: dataset " + child(name) + " has shape " + shape_text(d) + ", expected " + out.shape().str());
    auto type = detail::checked(H5Dget_type(ds.get()), H5Tclose, "HDF5: dataset " + child(name) + " has no type");
    if (H5Tget_class(type.get()) != H5T_FLOAT) throw FormatError("HDF5: dataset " + child(name) + " is not floating-point");
    const hid_t mem = std::is_same_v<T, double> ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT;
    if (size && H5Dread(ds.get(), mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0) {
      throw FormatError("HDF5: dataset " + child(name) + " cannot be read");
    }
  }

  /// A scalar (or one-element) numeric dataset, as a double: Keras's
  /// optimizer `iteration` (int64) and `learning_rate` (float32).
  double scalar(const std::string& name) const {
    auto ds = open_dataset(name);
    const std::vector<Index> d = dims(ds, name);
    Index size = 1;
    for (Index v : d) size *= v;
    if (size != 1) throw FormatError("HDF5: dataset " + child(name) + " is not a single number");
    auto type = detail::checked(H5Dget_type(ds.get()), H5Tclose, "HDF5: dataset " + child(name) + " has no type");
    const H5T_class_t cls = H5Tget_class(type.get());
    if (cls != H5T_FLOAT && cls != H5T_INTEGER) throw FormatError("HDF5: dataset " + child(name) + " is not a number");
    double value = 0;
    if (H5Dread(ds.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &value) < 0) {
      throw FormatError("HDF5: dataset " + child(name) + " cannot be read");
    }
    return value;
  }

  /// Writes a scalar dataset: int64 (`integer`) or float32.
  void write_scalar(const std::string& name, double value, bool integer) {
    detail::Handle space(H5Screate(H5S_SCALAR), H5Sclose);
    auto lcpl = detail::link_creation_with_parents();
    hid_t ds = H5Dcreate2(id(), name.c_str(), integer ? H5T_STD_I64LE : H5T_IEEE_F32LE, space.get(), lcpl.get(),
                          H5P_DEFAULT, H5P_DEFAULT);
    if (ds < 0) throw IOError("HDF5: cannot create dataset " + child(name));
    detail::Handle owner(ds, H5Dclose);
    if (H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &value) < 0) {
      throw IOError("HDF5: cannot write dataset " + child(name));
    }
  }

  /// Writes `t` as a float32 dataset at `name`, creating parent groups.
  template <class T>
  void write(const std::string& name, const Tensor<T>& t) {
    std::vector<hsize_t> d;
    for (Index v : t.shape()) d.push_back(static_cast<hsize_t>(v));
    detail::Handle space(H5Screate_simple(static_cast<int>(d.size()), d.data(), nullptr), H5Sclose);
    auto lcpl = detail::link_creation_with_parents();
    hid_t ds = H5Dcreate2(id(), name.c_str(), H5T_IEEE_F32LE, space.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT);
    if (ds < 0) throw IOError("HDF5: cannot create dataset " + child(name));
    detail::Handle owner(ds, H5Dclose);
    const hid_t mem = std::is_same_v<T, double> ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT;
    if (t.size() && H5Dwrite(ds, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data()) < 0) {
      throw IOError("HDF5: cannot write dataset " + child(name));
    }
  }

 private:
  std::string child(const std::string& name) const { return (path_ == "/" ? "/" : path_ + "/") + name; }

  detail::Handle open_dataset(const std::string& name) const {
    if (!has(name)) throw FormatError("HDF5: no dataset '" + child(name) + "'");
    return detail::checked(H5Dopen2(id(), name.c_str(), H5P_DEFAULT), H5Dclose,
                           "HDF5: '" + child(name) + "' is not a dataset");
  }
  std::vector<Index> dims(const detail::Handle& ds, const std::string& name) const {
    auto space = detail::checked(H5Dget_space(ds.get()), H5Sclose, "HDF5: dataset " + child(name) + " has no dataspace");
    const int rank = H5Sget_simple_extent_ndims(space.get());
    if (rank < 0 || rank > 8) throw FormatError("HDF5: dataset " + child(name) + " has a bad rank");
    std::vector<hsize_t> d(static_cast<std::size_t>(rank));
    H5Sget_simple_extent_dims(space.get(), d.data(), nullptr);
    std::vector<Index> out;
    for (hsize_t v : d) {
      if (v > (hsize_t{1} << 31)) throw FormatError("HDF5: dataset " + child(name) + " is too large");
      out.push_back(static_cast<Index>(v));
    }
    return out;
  }
  static std::string shape_text(const std::vector<Index>& d) {
    std::string s = "(";
    for (std::size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
    return s + (d.size() == 1 ? ",)" : ")");
  }
  detail::Handle create_attribute(const std::string& name, hid_t type, hid_t space) {
    if (has_attribute(name)) H5Adelete(id(), name.c_str());
    hid_t a = H5Acreate2(id(), name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) throw IOError("HDF5: cannot create attribute " + name + " of " + path_);
    return detail::Handle(a, H5Aclose);
  }

  detail::Handle h_;
  std::string path_;
};

/// An open HDF5 file; its root group is `root()`.
class File {
 public:
  /// Opens an HDF5 image held in memory (a file read whole, or a zip entry).
  /// The bytes must outlive the File.
  static File open_image(const std::vector<unsigned char>& bytes, const std::string& what) {
    detail::quiet();
    if (bytes.size() < 8 || std::memcmp(bytes.data(), "\x89HDF\r\n\x1a\n", 8) != 0) {
      throw FormatError(what + ": not an HDF5 file");
    }
    detail::Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    H5Pset_fapl_core(fapl.get(), 1 << 16, 0);
    // HDF5 copies the image unless told otherwise; the copy keeps it simple.
    if (H5Pset_file_image(fapl.get(), const_cast<unsigned char*>(bytes.data()), bytes.size()) < 0) {
      throw FormatError(what + ": HDF5 refused the image");
    }
    hid_t f = H5Fopen(detail::memory_file_name().c_str(), H5F_ACC_RDONLY, fapl.get());
    if (f < 0) throw FormatError(what + ": not a readable HDF5 file");
    return File(detail::Handle(f, H5Fclose));
  }
  /// A new, empty file in memory; `image()` gives its bytes.
  static File create_in_memory() {
    detail::quiet();
    detail::Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    H5Pset_fapl_core(fapl.get(), 1 << 20, 0);
    hid_t f = H5Fcreate(detail::memory_file_name().c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
    if (f < 0) throw IOError("HDF5: cannot create an in-memory file");
    return File(detail::Handle(f, H5Fclose));
  }

  Group root() const {
    return Group(detail::checked(H5Gopen2(h_.get(), "/", H5P_DEFAULT), H5Gclose, "HDF5: no root group"), "/");
  }

  /// The file's bytes as they would be on disk.
  std::vector<unsigned char> image() const {
    if (H5Fflush(h_.get(), H5F_SCOPE_GLOBAL) < 0) throw IOError("HDF5: cannot flush the in-memory file");
    const ssize_t n = H5Fget_file_image(h_.get(), nullptr, 0);
    if (n < 0) throw IOError("HDF5: cannot get the file image");
    std::vector<unsigned char> bytes(static_cast<std::size_t>(n));
    if (H5Fget_file_image(h_.get(), bytes.data(), bytes.size()) < 0) throw IOError("HDF5: cannot get the file image");
    return bytes;
  }

 private:
  explicit File(detail::Handle h) : h_(std::move(h)) {}
  detail::Handle h_;
};

}  // namespace loom::keras::hdf5
