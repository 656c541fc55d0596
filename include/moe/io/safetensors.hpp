/// @file io/safetensors.hpp
/// Reads Hugging Face checkpoints: `.safetensors` files (memory-mapped, zero-copy tensor views)
/// and folders of them (`model.safetensors.index.json` for sharded checkpoints, `config.json`).
///
/// The format (huggingface/safetensors): an 8-byte little-endian header length N, N bytes of
/// UTF-8 JSON (an object: tensor name -> {"dtype", "shape", "data_offsets": [begin, end]},
/// plus an optional "__metadata__" string map; may be padded with spaces), then the data
/// buffer; offsets are relative to the buffer, tensors are row-major little-endian.
///
/// Files are untrusted: every length, offset, shape and dtype is checked before any byte is
/// read, and a bad file fails with [moe.io.safetensors] naming the file and what is wrong.
/// Needs nlohmann/json (Debian `nlohmann-json3-dev`).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../config.hpp"
#include "../detail/numeric.hpp"
#include "mapped_file.hpp"
#include "npy.hpp"  // shape_string

namespace moe::io {

/// Element types of tensor files (safetensors' names; GGUF's float types map to the same).
enum class dtype { boolean, u8, i8, f8_e5m2, f8_e4m3, i16, u16, f16, bf16, i32, u32, f32, f64, i64, u64 };

[[nodiscard]] inline const char* dtype_name(dtype t) noexcept {
    switch (t) {
        case dtype::boolean: return "BOOL";
        case dtype::u8: return "U8";
        case dtype::i8: return "I8";
        case dtype::f8_e5m2: return "F8_E5M2";
        case dtype::f8_e4m3: return "F8_E4M3";
        case dtype::i16: return "I16";
        case dtype::u16: return "U16";
        case dtype::f16: return "F16";
        case dtype::bf16: return "BF16";
        case dtype::i32: return "I32";
        case dtype::u32: return "U32";
        case dtype::f32: return "F32";
        case dtype::f64: return "F64";
        case dtype::i64: return "I64";
        case dtype::u64: return "U64";
    }
    return "?";
}

[[nodiscard]] inline std::size_t dtype_size(dtype t) noexcept {
    switch (t) {
        case dtype::boolean:
        case dtype::u8:
        case dtype::i8:
        case dtype::f8_e5m2:
        case dtype::f8_e4m3: return 1;
        case dtype::i16:
        case dtype::u16:
        case dtype::f16:
        case dtype::bf16: return 2;
        case dtype::i32:
        case dtype::u32:
        case dtype::f32: return 4;
        case dtype::f64:
        case dtype::i64:
        case dtype::u64: return 8;
    }
    return 0;
}

/// A tensor of a mapped file: its bytes stay valid while the file object lives.
struct tensor_view {
    std::string name;
    dtype type = dtype::f32;
    std::vector<std::size_t> shape;
    const std::uint8_t* data = nullptr;
    std::size_t bytes = 0;

    [[nodiscard]] std::size_t numel() const noexcept {
        std::size_t n = 1;
        for (std::size_t d : shape) n *= d;
        return n;
    }
};

/// out[0, numel) = the tensor's values as float (exact for every float type but F64, which
/// rounds to nearest; integers convert as static_cast<float>). Throws [moe.io.tensor] when
/// `n` is not the tensor's element count.
inline void to_float(const tensor_view& t, float* out, std::size_t n) {
    namespace fd = ::moe::detail;
    if (n != t.numel()) MOE_THROW("moe.io.tensor", "tensor '", t.name, "' has ", t.numel(), " elements, asked for ", n);
    const std::uint8_t* p = t.data;
    for (std::size_t i = 0; i < n; ++i) {
        switch (t.type) {
            case dtype::boolean:
            case dtype::u8: out[i] = p[i]; break;
            case dtype::i8: out[i] = static_cast<std::int8_t>(p[i]); break;
            case dtype::f8_e4m3: out[i] = fd::e4m3_to_float(p[i]); break;
            case dtype::f8_e5m2: out[i] = fd::fp16_to_float(static_cast<std::uint16_t>(p[i] << 8)); break;
            case dtype::f16: out[i] = fd::fp16_to_float(fd::load_u16(p + 2 * i)); break;
            case dtype::bf16: out[i] = fd::bf16_to_float(fd::load_u16(p + 2 * i)); break;
            case dtype::i16: out[i] = static_cast<std::int16_t>(fd::load_u16(p + 2 * i)); break;
            case dtype::u16: out[i] = fd::load_u16(p + 2 * i); break;
            case dtype::f32: std::memcpy(out + i, p + 4 * i, 4); break;
            case dtype::i32: {
                std::int32_t v;
                std::memcpy(&v, p + 4 * i, 4);
                out[i] = static_cast<float>(v);
            } break;
            case dtype::u32: {
                std::uint32_t v;
                std::memcpy(&v, p + 4 * i, 4);
                out[i] = static_cast<float>(v);
            } break;
            case dtype::f64: {
                double v;
                std::memcpy(&v, p + 8 * i, 8);
                out[i] = static_cast<float>(v);
            } break;
            case dtype::i64: {
                std::int64_t v;
                std::memcpy(&v, p + 8 * i, 8);
                out[i] = static_cast<float>(v);
            } break;
            case dtype::u64: {
                std::uint64_t v;
                std::memcpy(&v, p + 8 * i, 8);
                out[i] = static_cast<float>(v);
            } break;
        }
    }
}

[[nodiscard]] inline std::vector<float> to_float(const tensor_view& t) {
    std::vector<float> v(t.numel());
    to_float(t, v.data(), v.size());
    return v;
}

namespace detail {

inline bool parse_dtype(const std::string& s, dtype& t) noexcept {
    static const std::pair<const char*, dtype> names[] = {
        {"BOOL", dtype::boolean}, {"U8", dtype::u8},   {"I8", dtype::i8},     {"F8_E5M2", dtype::f8_e5m2}, {"F8_E4M3", dtype::f8_e4m3},
        {"I16", dtype::i16},      {"U16", dtype::u16}, {"F16", dtype::f16},   {"BF16", dtype::bf16},       {"I32", dtype::i32},
        {"U32", dtype::u32},      {"F32", dtype::f32}, {"F64", dtype::f64},   {"I64", dtype::i64},         {"U64", dtype::u64}};
    for (const auto& [n, d] : names)
        if (s == n) {
            t = d;
            return true;
        }
    return false;
}

/// a * b, or false on overflow of std::size_t.
inline bool mul_ok(std::size_t a, std::size_t b, std::size_t& r) noexcept {
    if (a != 0 && b > std::numeric_limits<std::size_t>::max() / a) return false;
    r = a * b;
    return true;
}

inline std::string read_text_file(const std::string& path, const char* id) {
    std::ifstream f(path, std::ios::binary);
    if (!f) MOE_THROW(id, "cannot open '", path, "'");
    return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

inline nlohmann::json parse_json(const std::string& text, const std::string& path, const char* id) {
    nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) MOE_THROW(id, path, ": not valid JSON");
    return j;
}

}  // namespace detail

/// The largest JSON header accepted (the reference implementation's limit).
inline constexpr std::size_t safetensors_max_header = 100'000'000;

/// One `.safetensors` file, mapped. Thread-safe for reads after construction.
class safetensors_file {
public:
    struct entry {
        dtype type;
        std::vector<std::size_t> shape;
        std::size_t begin, end;  ///< offsets into the data buffer
    };

    safetensors_file() = default;

    /// Maps and validates `path`. Throws [moe.io.safetensors].
    explicit safetensors_file(const std::string& path) : file_(std::make_unique<mapped_file>(path, "moe.io.safetensors")) {
        parse(file_->data(), file_->size(), path);
    }

    /// Validates a file already in memory (`bytes` must outlive the object); `name` is what
    /// errors call it. Throws [moe.io.safetensors].
    safetensors_file(const std::uint8_t* bytes, std::size_t size, const std::string& name) : name_(name) { parse(bytes, size, name); }

    [[nodiscard]] const std::string& path() const noexcept { return file_ ? file_->path() : name_; }
    [[nodiscard]] bool contains(const std::string& name) const { return entries_.count(name) != 0; }
    [[nodiscard]] const std::map<std::string, entry>& entries() const noexcept { return entries_; }
    [[nodiscard]] const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }

    /// The tensor `name`, zero-copy. Throws [moe.io.safetensors] when it is missing.
    [[nodiscard]] tensor_view tensor(const std::string& name) const {
        const auto it = entries_.find(name);
        if (it == entries_.end()) MOE_THROW("moe.io.safetensors", path(), ": no tensor '", name, "'");
        const entry& e = it->second;
        return {name, e.type, e.shape, data_ + e.begin, e.end - e.begin};
    }

private:
    void parse(const std::uint8_t* p, std::size_t size, const std::string& path) {
        const char* id = "moe.io.safetensors";
        if (size < 8) MOE_THROW(id, path, ": truncated (", size, " bytes; a safetensors file starts with an 8-byte header length)");
        std::uint64_t n = 0;
        for (int i = 7; i >= 0; --i) n = (n << 8) | p[i];
        if (n > size - 8)
            MOE_THROW(id, path, ": header length ", n, " runs past the end of the file (", size, " bytes)");
        if (n > safetensors_max_header) MOE_THROW(id, path, ": header length ", n, " exceeds ", safetensors_max_header, " bytes");
        if (n < 2 || p[8] != '{') MOE_THROW(id, path, ": header is not a JSON object (bad magic?)");
        const std::string text(reinterpret_cast<const char*>(p + 8), static_cast<std::size_t>(n));
        const nlohmann::json h = detail::parse_json(text, path, id);
        if (!h.is_object()) MOE_THROW(id, path, ": header is not a JSON object");
        data_ = p + 8 + n;
        data_bytes_ = size - 8 - static_cast<std::size_t>(n);
        for (auto it = h.begin(); it != h.end(); ++it) {
            const std::string& name = it.key();
            const nlohmann::json& v = it.value();
            if (name == "__metadata__") {
                if (!v.is_object()) MOE_THROW(id, path, ": __metadata__ is not an object");
                for (auto m = v.begin(); m != v.end(); ++m)
                    if (m.value().is_string()) metadata_[m.key()] = m.value().get<std::string>();
                continue;
            }
            if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
                MOE_THROW(id, path, ": tensor '", name, "' lacks dtype, shape or data_offsets");
            entry e{};
            if (!v["dtype"].is_string() || !detail::parse_dtype(v["dtype"].get<std::string>(), e.type))
                MOE_THROW(id, path, ": tensor '", name, "' has unsupported dtype ", v["dtype"].dump());
            const nlohmann::json& s = v["shape"];
            if (!s.is_array()) MOE_THROW(id, path, ": tensor '", name, "' has a malformed shape");
            std::size_t numel = 1;
            for (const auto& d : s) {
                if (!d.is_number_unsigned()) MOE_THROW(id, path, ": tensor '", name, "' has a malformed shape");
                const auto dim = d.get<std::uint64_t>();
                if (dim > std::numeric_limits<std::size_t>::max() || !detail::mul_ok(numel, static_cast<std::size_t>(dim), numel))
                    MOE_THROW(id, path, ": tensor '", name, "' shape overflows");
                e.shape.push_back(static_cast<std::size_t>(dim));
            }
            const nlohmann::json& o = v["data_offsets"];
            if (!o.is_array() || o.size() != 2 || !o[0].is_number_unsigned() || !o[1].is_number_unsigned())
                MOE_THROW(id, path, ": tensor '", name, "' has malformed data_offsets");
            const auto b = o[0].get<std::uint64_t>(), en = o[1].get<std::uint64_t>();
            if (b > en || en > data_bytes_)
                MOE_THROW(id, path, ": tensor '", name, "' data_offsets [", b, ", ", en, "] outside the data (", data_bytes_, " bytes)");
            std::size_t want = 0;
            if (!detail::mul_ok(numel, dtype_size(e.type), want) || want != en - b)
                MOE_THROW(id, path, ": tensor '", name, "' holds ", en - b, " bytes, its dtype and shape need ", numel * dtype_size(e.type));
            e.begin = static_cast<std::size_t>(b);
            e.end = static_cast<std::size_t>(en);
            entries_.emplace(name, std::move(e));
        }
    }

public:
    /// Drops [p, p + n)'s mapped pages from the resident set where they are this file's.
    void drop_pages(const std::uint8_t* p, std::size_t n) const noexcept { file_->drop_pages(p, n); }

private:
    std::unique_ptr<mapped_file> file_;
    std::string name_;
    const std::uint8_t* data_ = nullptr;
    std::size_t data_bytes_ = 0;
    std::map<std::string, entry> entries_;
    std::map<std::string, std::string> metadata_;
};

/// A Hugging Face model folder: `config.json` and either `model.safetensors` or the shards that
/// `model.safetensors.index.json` names (all mapped at construction; pages are read only when a
/// tensor's bytes are touched). Thread-safe for reads after construction.
class safetensors_checkpoint {
public:
    /// Opens `dir`. Throws [moe.io.safetensors] (no checkpoint there, a bad index or shard) or
    /// [moe.io.config] (config.json missing or not JSON).
    explicit safetensors_checkpoint(const std::string& dir) : dir_(dir) {
        const char* id = "moe.io.safetensors";
        const std::string cfg_path = dir + "/config.json";
        config_ = detail::parse_json(detail::read_text_file(cfg_path, "moe.io.config"), cfg_path, "moe.io.config");
        if (!config_.is_object()) MOE_THROW("moe.io.config", cfg_path, ": not a JSON object");
        const std::string index_path = dir + "/model.safetensors.index.json";
        std::ifstream probe(index_path);
        if (probe) {
            probe.close();
            const nlohmann::json idx = detail::parse_json(detail::read_text_file(index_path, id), index_path, id);
            if (!idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object())
                MOE_THROW(id, index_path, ": no weight_map object");
            std::map<std::string, std::size_t> shard_of_file;
            for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
                if (!it.value().is_string()) MOE_THROW(id, index_path, ": weight_map value of '", it.key(), "' is not a file name");
                const std::string file = it.value().get<std::string>();
                if (file.empty() || file.find('/') != std::string::npos || file.find('\\') != std::string::npos || file == "." || file == "..")
                    MOE_THROW(id, index_path, ": weight_map names '", file, "', not a file of this folder");
                auto [pos, added] = shard_of_file.emplace(file, shards_.size());
                if (added) shards_.emplace_back(dir + "/" + file);
                where_[it.key()] = pos->second;
            }
            for (const auto& [name, s] : where_)
                if (!shards_[s].contains(name))
                    MOE_THROW(id, index_path, ": '", name, "' is not in ", shards_[s].path());
        } else {
            shards_.emplace_back(dir + "/model.safetensors");
            for (const auto& [name, e] : shards_[0].entries()) {
                (void)e;
                where_[name] = 0;
            }
        }
    }

    [[nodiscard]] const std::string& dir() const noexcept { return dir_; }
    [[nodiscard]] const nlohmann::json& config() const noexcept { return config_; }
    [[nodiscard]] bool contains(const std::string& name) const { return where_.count(name) != 0; }
    [[nodiscard]] std::vector<std::string> names() const {
        std::vector<std::string> r;
        r.reserve(where_.size());
        for (const auto& [n, s] : where_) r.push_back(n), (void)s;
        return r;
    }
    /// The tensor `name`, zero-copy. Throws [moe.io.safetensors] "<dir>: no tensor '<name>'".
    [[nodiscard]] tensor_view tensor(const std::string& name) const {
        const auto it = where_.find(name);
        if (it == where_.end()) MOE_THROW("moe.io.safetensors", dir_, ": no tensor '", name, "'");
        return shards_[it->second].tensor(name);
    }

    /// Drops tensor t's mapped pages from the resident set (see mapped_file::drop_pages): for
    /// bytes already packed elsewhere.
    void drop_pages(const tensor_view& t) const noexcept { drop_pages(t.data, t.bytes); }
    void drop_pages(const std::uint8_t* p, std::size_t n) const noexcept {
        for (const auto& s : shards_) s.drop_pages(p, n);
    }

private:
    std::string dir_;
    nlohmann::json config_;
    std::vector<safetensors_file> shards_;
    std::map<std::string, std::size_t> where_;
};

}  // namespace moe::io
