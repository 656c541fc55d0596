/// @file io/gguf.hpp
/// Reads llama.cpp's GGUF files (versions 2 and 3, little-endian): the header, the metadata
/// key / values, the tensor infos and, memory-mapped, the tensors' bytes (zero-copy views; a
/// quantized tensor's blocks are the source bytes of moe's GGUF formats, see
/// kernels/formats/).
///
/// The format (ggml's docs/gguf.md): "GGUF", u32 version, u64 tensor count, u64 key/value
/// count; each key/value is a string key (u64 length + bytes), a u32 value type and the value
/// (arrays: u32 element type, u64 count, elements); each tensor info is a string name, u32
/// n_dims, u64 ne[n_dims] (ne[0] varies fastest), u32 ggml type, u64 offset; then padding to
/// `general.alignment` (default 32) and the data section, where each tensor starts at its
/// offset (a multiple of the alignment).
///
/// Files are untrusted: every count, length, dimension, type and offset is checked against
/// the file before use, and a bad file fails with [moe.io.gguf] naming the file and the fault.
/// Metadata values are kept as nlohmann/json values (numbers, strings, bools, arrays).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "../config.hpp"
#include "mapped_file.hpp"
#include "safetensors.hpp"

namespace moe::io {

/// ggml's tensor types (ggml.h `enum ggml_type`; the numbers are the file format).
enum class ggml_type : std::uint32_t {
    f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9,
    q2_k = 10, q3_k = 11, q4_k = 12, q5_k = 13, q6_k = 14, q8_k = 15,
    iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21, iq2_s = 22, iq4_xs = 23,
    i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_m = 29, bf16 = 30, tq1_0 = 34, tq2_0 = 35, mxfp4 = 39
};

/// A type's name as llama.cpp prints it, its block (values per block along ne[0]) and the
/// bytes of one block (ggml-common.h's block structs).
struct ggml_type_traits {
    const char* name;
    std::size_t block, bytes;
};

/// The traits of type number `t`, or false for a number this reader does not know.
[[nodiscard]] inline bool ggml_traits(std::uint32_t t, ggml_type_traits& out) noexcept {
    struct row {
        std::uint32_t id;
        ggml_type_traits tr;
    };
    static const row table[] = {
        {0, {"F32", 1, 4}},         {1, {"F16", 1, 2}},         {2, {"Q4_0", 32, 18}},     {3, {"Q4_1", 32, 20}},
        {6, {"Q5_0", 32, 22}},      {7, {"Q5_1", 32, 24}},      {8, {"Q8_0", 32, 34}},     {9, {"Q8_1", 32, 36}},
        {10, {"Q2_K", 256, 84}},    {11, {"Q3_K", 256, 110}},   {12, {"Q4_K", 256, 144}},  {13, {"Q5_K", 256, 176}},
        {14, {"Q6_K", 256, 210}},   {15, {"Q8_K", 256, 292}},   {16, {"IQ2_XXS", 256, 66}}, {17, {"IQ2_XS", 256, 74}},
        {18, {"IQ3_XXS", 256, 98}}, {19, {"IQ1_S", 256, 50}},   {20, {"IQ4_NL", 32, 18}},  {21, {"IQ3_S", 256, 110}},
        {22, {"IQ2_S", 256, 82}},   {23, {"IQ4_XS", 256, 136}}, {24, {"I8", 1, 1}},        {25, {"I16", 1, 2}},
        {26, {"I32", 1, 4}},        {27, {"I64", 1, 8}},        {28, {"F64", 1, 8}},       {29, {"IQ1_M", 256, 56}},
        {30, {"BF16", 1, 2}},       {34, {"TQ1_0", 256, 54}},   {35, {"TQ2_0", 256, 66}},  {39, {"MXFP4", 32, 17}},
    };
    for (const row& r : table)
        if (r.id == t) {
            out = r.tr;
            return true;
        }
    return false;
}

/// One tensor of a GGUF file. `ne` as ggml has it (ne[0] = the contiguous dimension, e.g. K
/// of a weight); `shape()` is the row-major (PyTorch) order, ne reversed: a stacked expert
/// tensor `ffn_gate_exps` with ne = [H, F, E] has shape [E, F, H].
struct gguf_tensor {
    std::string name;
    ggml_type type = ggml_type::f32;
    std::vector<std::uint64_t> ne;
    std::uint64_t offset = 0;  ///< in the data section
    const std::uint8_t* data = nullptr;
    std::size_t bytes = 0;

    [[nodiscard]] std::vector<std::size_t> shape() const {
        return std::vector<std::size_t>(ne.rbegin(), ne.rend());
    }
    [[nodiscard]] const char* type_name() const noexcept {
        ggml_type_traits t{};
        return ggml_traits(static_cast<std::uint32_t>(type), t) ? t.name : "?";
    }
    /// The tensor as a `tensor_view` (its bytes, zero-copy) for element types (F32, F16, BF16,
    /// F64, I8-I64). Throws [moe.io.gguf] for block-quantized types.
    [[nodiscard]] tensor_view view() const {
        dtype d;
        switch (type) {
            case ggml_type::f32: d = dtype::f32; break;
            case ggml_type::f16: d = dtype::f16; break;
            case ggml_type::bf16: d = dtype::bf16; break;
            case ggml_type::f64: d = dtype::f64; break;
            case ggml_type::i8: d = dtype::i8; break;
            case ggml_type::i16: d = dtype::i16; break;
            case ggml_type::i32: d = dtype::i32; break;
            case ggml_type::i64: d = dtype::i64; break;
            default: MOE_THROW("moe.io.gguf", "tensor '", name, "' is ", type_name(), ", not an element type");
        }
        return {name, d, shape(), data, bytes};
    }
};

namespace detail {

/// A bounds-checked little-endian reader over [p, end).
struct gguf_cursor {
    const std::uint8_t* p;
    const std::uint8_t* begin;
    const std::uint8_t* end;
    const std::string& path;

    [[nodiscard]] std::size_t left() const noexcept { return static_cast<std::size_t>(end - p); }
    void need(std::size_t n, const char* what) const {
        if (n > left()) MOE_THROW("moe.io.gguf", path, ": truncated in ", what, " at byte ", p - begin, " (", n, " bytes needed, ", left(), " left)");
    }
    template <class T>
    T get(const char* what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, p, sizeof(T));  // x86 / ARM: little-endian, as the file
        p += sizeof(T);
        return v;
    }
    std::string str(const char* what) {
        const auto n = get<std::uint64_t>(what);
        if (n > left()) MOE_THROW("moe.io.gguf", path, ": string of ", n, " bytes in ", what, " runs past the end of the file");
        std::string s(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
        p += n;
        return s;
    }
};

/// Smallest bytes an element of GGUF value type `t` takes (for bounding array counts), 0 if unknown.
inline std::size_t gguf_min_size(std::uint32_t t) noexcept {
    switch (t) {
        case 0: case 1: case 7: return 1;
        case 2: case 3: return 2;
        case 4: case 5: case 6: return 4;
        case 8: return 8;   // the string's length
        case 9: return 12;  // an array's type and count
        case 10: case 11: case 12: return 8;
        default: return 0;
    }
}

inline nlohmann::json gguf_value(gguf_cursor& c, std::uint32_t t, const std::string& key, int depth) {
    const char* what = "a metadata value";
    switch (t) {
        case 0: return c.get<std::uint8_t>(what);
        case 1: return c.get<std::int8_t>(what);
        case 2: return c.get<std::uint16_t>(what);
        case 3: return c.get<std::int16_t>(what);
        case 4: return c.get<std::uint32_t>(what);
        case 5: return c.get<std::int32_t>(what);
        case 6: return c.get<float>(what);
        case 7: {
            const auto b = c.get<std::uint8_t>(what);
            if (b > 1) MOE_THROW("moe.io.gguf", c.path, ": key '", key, "' has bool value ", int(b));
            return b == 1;
        }
        case 8: return c.str(what);  // bytes as stored (dump with error_handler_t::replace if not UTF-8)
        case 9: {
            if (depth > 0) MOE_THROW("moe.io.gguf", c.path, ": key '", key, "' nests arrays");
            const auto et = c.get<std::uint32_t>(what);
            const std::size_t m = gguf_min_size(et);
            if (m == 0) MOE_THROW("moe.io.gguf", c.path, ": key '", key, "' has arrays of unknown value type ", et);
            const auto n = c.get<std::uint64_t>(what);
            if (n > c.left() / m) MOE_THROW("moe.io.gguf", c.path, ": key '", key, "' array of ", n, " values runs past the end of the file");
            nlohmann::json a = nlohmann::json::array();
            for (std::uint64_t i = 0; i < n; ++i) a.push_back(gguf_value(c, et, key, depth + 1));
            return a;
        }
        case 10: return c.get<std::uint64_t>(what);
        case 11: return c.get<std::int64_t>(what);
        case 12: return c.get<double>(what);
        default: MOE_THROW("moe.io.gguf", c.path, ": key '", key, "' has unknown value type ", t);
    }
}

}  // namespace detail

/// A GGUF file, mapped. Thread-safe for reads after construction.
class gguf_file {
public:
    /// Maps and validates `path`. Throws [moe.io.gguf].
    explicit gguf_file(const std::string& path) : file_(std::make_unique<mapped_file>(path, "moe.io.gguf")) {
        parse(file_->data(), file_->size());
    }

    /// Validates a file already in memory (`bytes` must outlive the object); `name` is what
    /// errors call it. Throws [moe.io.gguf].
    gguf_file(const std::uint8_t* bytes, std::size_t size, const std::string& name) : name_(name) { parse(bytes, size); }

    [[nodiscard]] const std::string& path() const noexcept { return file_ ? file_->path() : name_; }
    [[nodiscard]] std::uint32_t version() const noexcept { return version_; }
    [[nodiscard]] std::size_t alignment() const noexcept { return alignment_; }
    /// Every key / value (GGUF arrays as JSON arrays).
    [[nodiscard]] const nlohmann::json& metadata() const noexcept { return metadata_; }
    [[nodiscard]] bool has(const std::string& key) const { return metadata_.contains(key); }
    /// The value of `key` converted to T; throws [moe.io.gguf] when missing or of another kind.
    template <class T>
    [[nodiscard]] T get(const std::string& key) const {
        if (!metadata_.contains(key)) MOE_THROW("moe.io.gguf", path(), ": no key '", key, "'");
        const nlohmann::json& v = metadata_[key];
        const bool ok = std::is_same<T, std::string>::value ? v.is_string()
                        : std::is_same<T, bool>::value       ? v.is_boolean()
                        : std::is_floating_point<T>::value   ? v.is_number()
                        : std::is_integral<T>::value          ? v.is_number_integer()
                                                              : true;
        if (!ok) MOE_THROW("moe.io.gguf", path(), ": key '", key, "' is ", v.type_name(), ", not the kind asked for");
        return v.get<T>();
    }
    /// The value of `key`, or `fallback` when the file has no such key.
    template <class T>
    [[nodiscard]] T get_or(const std::string& key, T fallback) const {
        return has(key) ? get<T>(key) : fallback;
    }
    [[nodiscard]] const std::vector<gguf_tensor>& tensors() const noexcept { return tensors_; }
    /// Drops tensor t's mapped pages from the resident set (see mapped_file::drop_pages): for
    /// bytes already packed elsewhere.
    void drop_pages(const gguf_tensor& t) const noexcept { file_->drop_pages(t.data, t.bytes); }
    void drop_pages(const std::uint8_t* p, std::size_t n) const noexcept { file_->drop_pages(p, n); }
    [[nodiscard]] bool contains(const std::string& name) const { return index_.count(name) != 0; }
    /// The tensor `name`, zero-copy. Throws [moe.io.gguf] "<path>: no tensor '<name>'".
    [[nodiscard]] const gguf_tensor& tensor(const std::string& name) const {
        const auto it = index_.find(name);
        if (it == index_.end()) MOE_THROW("moe.io.gguf", path(), ": no tensor '", name, "'");
        return tensors_[it->second];
    }

private:
    void parse(const std::uint8_t* bytes, std::size_t size) {
        const char* id = "moe.io.gguf";
        const std::string& path = this->path();
        detail::gguf_cursor c{bytes, bytes, bytes + size, path};
        if (c.left() < 4 || std::memcmp(c.p, "GGUF", 4) != 0) MOE_THROW(id, path, ": not a GGUF file (bad magic)");
        c.p += 4;
        version_ = c.get<std::uint32_t>("the header");
        if (version_ != 2 && version_ != 3)
            MOE_THROW(id, path, ": GGUF version ", version_, " is not supported (2 and 3 are; a big-endian file reads as a large version)");
        const auto n_tensors = c.get<std::uint64_t>("the header");
        const auto n_kv = c.get<std::uint64_t>("the header");
        if (n_kv > c.left() / 12) MOE_THROW(id, path, ": ", n_kv, " metadata entries cannot fit in the file");
        metadata_ = nlohmann::json::object();
        for (std::uint64_t i = 0; i < n_kv; ++i) {
            std::string key = c.str("a metadata key");
            const auto t = c.get<std::uint32_t>("a metadata key");
            if (metadata_.contains(key)) MOE_THROW(id, path, ": duplicate key '", key, "'");
            metadata_[key] = detail::gguf_value(c, t, key, 0);
        }
        std::size_t alignment = 32;
        if (metadata_.contains("general.alignment")) {
            const nlohmann::json& a = metadata_["general.alignment"];
            const std::uint64_t v = a.is_number_unsigned() ? a.get<std::uint64_t>() : 0;
            if (v == 0 || (v & (v - 1)) != 0 || v > (1u << 20))
                MOE_THROW(id, path, ": general.alignment ", a.dump(), " is not a power of two up to 2^20");
            alignment = static_cast<std::size_t>(v);
        }
        if (n_tensors > c.left() / 24) MOE_THROW(id, path, ": ", n_tensors, " tensors cannot fit in the file");
        std::vector<gguf_tensor> infos;
        infos.reserve(static_cast<std::size_t>(n_tensors));
        for (std::uint64_t i = 0; i < n_tensors; ++i) {
            gguf_tensor t;
            t.name = c.str("a tensor info");
            const auto nd = c.get<std::uint32_t>("a tensor info");
            if (nd < 1 || nd > 4) MOE_THROW(id, path, ": tensor '", t.name, "' has ", nd, " dimensions (1 to 4)");
            std::size_t numel = 1;
            for (std::uint32_t d = 0; d < nd; ++d) {
                const auto v = c.get<std::uint64_t>("a tensor info");
                if (v > std::numeric_limits<std::size_t>::max() || !detail::mul_ok(numel, static_cast<std::size_t>(v), numel))
                    MOE_THROW(id, path, ": tensor '", t.name, "' shape overflows");
                t.ne.push_back(v);
            }
            const auto ty = c.get<std::uint32_t>("a tensor info");
            ggml_type_traits tr{};
            if (!ggml_traits(ty, tr)) MOE_THROW(id, path, ": tensor '", t.name, "' has unsupported ggml type ", ty);
            t.type = static_cast<ggml_type>(ty);
            if (t.ne[0] % tr.block != 0)
                MOE_THROW(id, path, ": tensor '", t.name, "' ne[0]=", t.ne[0], " is not a multiple of ", tr.name, "'s block of ", tr.block);
            if (!detail::mul_ok(numel / tr.block, tr.bytes, t.bytes)) MOE_THROW(id, path, ": tensor '", t.name, "' shape overflows");
            t.offset = c.get<std::uint64_t>("a tensor info");
            if (t.offset % alignment != 0)
                MOE_THROW(id, path, ": tensor '", t.name, "' offset ", t.offset, " is not a multiple of the alignment ", alignment);
            if (index_.count(t.name) != 0) MOE_THROW(id, path, ": duplicate tensor '", t.name, "'");
            index_[t.name] = infos.size();
            infos.push_back(std::move(t));
        }
        const std::size_t header = static_cast<std::size_t>(c.p - c.begin);
        const std::size_t data_start = (header + alignment - 1) / alignment * alignment;
        const std::size_t data_bytes = data_start <= size ? size - data_start : 0;
        for (gguf_tensor& t : infos) {
            if (t.offset > data_bytes || t.bytes > data_bytes - t.offset)
                MOE_THROW(id, path, ": tensor '", t.name, "' (", t.bytes, " bytes at offset ", t.offset, ") runs past the end of the data (",
                          data_bytes, " bytes)");
            t.data = bytes + data_start + t.offset;
        }
        tensors_ = std::move(infos);
        alignment_ = alignment;
    }

    std::unique_ptr<mapped_file> file_;
    std::string name_;
    std::uint32_t version_ = 0;
    std::size_t alignment_ = 32;
    nlohmann::json metadata_;
    std::vector<gguf_tensor> tensors_;
    std::map<std::string, std::size_t> index_;
};

}  // namespace moe::io
