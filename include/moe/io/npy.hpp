/// @file io/npy.hpp
/// Read and write NumPy .npy files (format 1.0-3.0, little-endian, C order): the format
/// research code already speaks. Anything else is rejected with a [moe.npy.*] error.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <fstream>
#include <string>
#include <type_traits>
#include <vector>

#include "../config.hpp"
#include "../tensor.hpp"

namespace moe::io {

/// An .npy file's contents: raw little-endian bytes of `descr` ('<f4', '<f8', '<i4', '<i8').
struct npy_array {
    std::string descr;
    std::vector<std::size_t> shape;
    std::vector<char> bytes;

    [[nodiscard]] std::size_t size() const noexcept {
        std::size_t n = 1;
        for (std::size_t d : shape) n *= d;
        return n;
    }
};

/// "[2, 3]": a shape as error messages print it.
[[nodiscard]] inline std::string shape_string(const std::vector<std::size_t>& s) {
    std::string r = "[";
    for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

namespace detail {

template <class T>
constexpr const char* npy_descr() noexcept {
    if constexpr (std::is_same<T, float>::value) return "<f4";
    else if constexpr (std::is_same<T, double>::value) return "<f8";
    else if constexpr (std::is_same<T, std::int32_t>::value) return "<i4";
    else if constexpr (std::is_same<T, std::int64_t>::value) return "<i8";
    else return nullptr;
}

/// The bytes of one element of a supported dtype (little-endian floats of 2, 4, 8 bytes and
/// signed / unsigned integers of 1, 2, 4, 8), 0 for others.
inline std::size_t descr_size(const std::string& d) noexcept {
    if (d == "<f2") return 2;
    if (d == "<f4" || d == "<i4" || d == "<u4") return 4;
    if (d == "<f8" || d == "<i8" || d == "<u8") return 8;
    if (d == "<i2" || d == "<u2") return 2;
    if (d == "|i1" || d == "|u1") return 1;
    return 0;
}

inline std::string header_value(const std::string& h, const std::string& key, const std::string& path) {
    const std::size_t k = h.find("'" + key + "'");
    if (k == std::string::npos) MOE_THROW("moe.npy.format", path, ": header has no '", key, "'");
    std::size_t p = h.find(':', k);
    if (p == std::string::npos) MOE_THROW("moe.npy.format", path, ": malformed header");
    ++p;
    while (p < h.size() && h[p] == ' ') ++p;
    std::size_t end = p;
    if (p < h.size() && h[p] == '\'') {
        end = h.find('\'', p + 1);
        if (end == std::string::npos) MOE_THROW("moe.npy.format", path, ": malformed header");
        return h.substr(p + 1, end - p - 1);
    }
    if (p < h.size() && h[p] == '(') {
        end = h.find(')', p);
        if (end == std::string::npos) MOE_THROW("moe.npy.format", path, ": malformed header");
        return h.substr(p, end - p + 1);
    }
    while (end < h.size() && h[end] != ',' && h[end] != '}') ++end;
    return h.substr(p, end - p);
}

}  // namespace detail

/// Reads a whole .npy file. Throws [moe.npy.open], [moe.npy.format], [moe.npy.dtype],
/// [moe.npy.order] or [moe.npy.truncated].
[[nodiscard]] inline npy_array read_npy(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) MOE_THROW("moe.npy.open", "cannot open '", path, "'");
    char magic[8];
    if (!f.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0)
        MOE_THROW("moe.npy.format", path, ": not an .npy file (bad magic)");
    const int major = static_cast<unsigned char>(magic[6]);
    std::uint32_t hlen = 0;
    if (major == 1) {
        unsigned char b[2];
        if (!f.read(reinterpret_cast<char*>(b), 2)) MOE_THROW("moe.npy.truncated", path, ": header is cut short");
        hlen = b[0] | (b[1] << 8);
    } else if (major == 2 || major == 3) {
        unsigned char b[4];
        if (!f.read(reinterpret_cast<char*>(b), 4)) MOE_THROW("moe.npy.truncated", path, ": header is cut short");
        hlen = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<std::uint32_t>(b[3]) << 24);
    } else {
        MOE_THROW("moe.npy.format", path, ": unsupported .npy version ", major);
    }
    if (hlen > (1u << 20)) MOE_THROW("moe.npy.format", path, ": header length ", hlen, " is implausible");
    std::string h(hlen, '\0');
    if (!f.read(&h[0], hlen)) MOE_THROW("moe.npy.truncated", path, ": header is cut short");

    npy_array a;
    a.descr = detail::header_value(h, "descr", path);
    // One spelling per dtype: '<' for multi-byte types ('=' and '|' name the same bytes on the
    // little-endian hosts moe serves), '|' for single bytes.
    if (a.descr.size() == 3 && (a.descr[0] == '=' || a.descr[0] == '|' || a.descr[0] == '<'))
        a.descr[0] = a.descr[2] == '1' ? '|' : '<';
    if (detail::descr_size(a.descr) == 0)
        MOE_THROW("moe.npy.dtype", path, ": dtype '", a.descr,
                  "' is not supported (expected little-endian float16/32/64 or a signed or unsigned integer of 8 to 64 bits)");
    const std::string order = detail::header_value(h, "fortran_order", path);
    if (order != "False")
        MOE_THROW("moe.npy.order", path, ": Fortran-ordered arrays are not supported (save with C order)");
    const std::string shape = detail::header_value(h, "shape", path);
    std::size_t i = 1;
    while (i < shape.size()) {
        while (i < shape.size() && (shape[i] == ' ' || shape[i] == ',')) ++i;
        if (i >= shape.size() || shape[i] == ')') break;
        std::size_t v = 0;
        bool digits = false;
        while (i < shape.size() && shape[i] >= '0' && shape[i] <= '9') {
            v = v * 10 + static_cast<std::size_t>(shape[i] - '0');
            if (v > (std::size_t(1) << 40)) MOE_THROW("moe.npy.format", path, ": shape ", shape, " is too large");
            ++i;
            digits = true;
        }
        if (!digits) MOE_THROW("moe.npy.format", path, ": malformed shape ", shape);
        a.shape.push_back(v);
    }
    std::size_t elems = 1;
    for (std::size_t d : a.shape) {
        if (d != 0 && elems > (std::size_t(1) << 44) / d) MOE_THROW("moe.npy.format", path, ": shape ", shape, " is too large");
        elems *= d;
    }
    const std::size_t nbytes = elems * detail::descr_size(a.descr);
    // Check the data is there before allocating for it (a header may claim terabytes).
    const std::streampos here = f.tellg();
    f.seekg(0, std::ios::end);
    const std::streampos end = f.tellg();
    f.seekg(here);
    if (here < 0 || end < here || static_cast<std::size_t>(end - here) < nbytes)
        MOE_THROW("moe.npy.truncated", path, ": expected ", nbytes, " bytes of data for shape ", shape);
    a.bytes.resize(nbytes);
    if (nbytes && !f.read(a.bytes.data(), static_cast<std::streamsize>(nbytes)))
        MOE_THROW("moe.npy.truncated", path, ": expected ", nbytes, " bytes of data for shape ", shape);
    return a;
}

namespace detail {
/// IEEE binary16 bits to float (exact).
inline float half_to_float(std::uint16_t h) noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    std::uint32_t exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu, bits = 0;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man != 0) {  // subnormal: normalise
        exp = 113;
        while (!(man & 0x400u)) {
            man <<= 1;
            --exp;
        }
        bits = sign | (exp << 23) | ((man & 0x3FFu) << 13);
    } else {
        bits = sign;
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
}  // namespace detail

/// The elements of `a` converted to T, each exactly: floating T takes float16/32/64 and every
/// integer dtype (an integer the float cannot hold exactly, beyond 2^24 for float32, throws
/// [moe.npy.range]); integral T takes every integer dtype whose values fit in T ([moe.npy.range]
/// otherwise), and no floats ([moe.npy.dtype]).
template <class T>
[[nodiscard]] std::vector<T> npy_values(const npy_array& a, const std::string& path) {
    const bool floating = a.descr[1] == 'f';
    if (floating && !std::is_floating_point<T>::value)
        MOE_THROW("moe.npy.dtype", path, ": dtype '", a.descr, "' where an integer dtype was expected");
    const std::size_t n = a.size();
    std::vector<T> out(n);
    auto convert = [&](auto tag) {
        using S = decltype(tag);
        for (std::size_t i = 0; i < n; ++i) {
            S v;
            std::memcpy(&v, a.bytes.data() + i * sizeof(S), sizeof(S));
            if constexpr (std::is_same<S, std::uint16_t>::value && std::is_floating_point<T>::value) {
                if (a.descr[1] == 'f') {
                    out[i] = static_cast<T>(detail::half_to_float(v));
                    continue;
                }
            }
            if constexpr (std::is_floating_point<S>::value) {
                out[i] = static_cast<T>(v);  // float to float: widening, or float64 to float32 rounding as numpy's astype
            } else {
                bool exact;
                if constexpr (std::is_floating_point<T>::value) {
                    const T t = static_cast<T>(v);
                    // t is finite; compare back in the wider of the two exact domains
                    exact = static_cast<long double>(t) == static_cast<long double>(v);
                    out[i] = t;
                } else {
                    const bool fits = std::is_signed<S>::value
                                          ? (static_cast<std::int64_t>(v) >= static_cast<std::int64_t>(std::numeric_limits<T>::min()) &&
                                             (static_cast<std::int64_t>(v) < 0 ||
                                              static_cast<std::uint64_t>(v) <= static_cast<std::uint64_t>(std::numeric_limits<T>::max())))
                                          : static_cast<std::uint64_t>(v) <= static_cast<std::uint64_t>(std::numeric_limits<T>::max());
                    exact = fits;
                    out[i] = static_cast<T>(v);
                }
                if (!exact)
                    MOE_THROW("moe.npy.range", path, ": element ", i, " = ", +v, " (", a.descr, ") is not exactly representable as ",
                              std::is_floating_point<T>::value ? (sizeof(T) == 4 ? "float32" : "float64")
                                                               : (sizeof(T) == 4 ? "int32" : sizeof(T) == 8 ? "int64" : "the integer type"));
            }
        }
    };
    const std::string& d = a.descr;
    if (d == "<f2" || d == "<u2") convert(std::uint16_t{});
    else if (d == "<f4") convert(float{});
    else if (d == "<f8") convert(double{});
    else if (d == "|i1") convert(std::int8_t{});
    else if (d == "|u1") convert(std::uint8_t{});
    else if (d == "<i2") convert(std::int16_t{});
    else if (d == "<i4") convert(std::int32_t{});
    else if (d == "<u4") convert(std::uint32_t{});
    else if (d == "<i8") convert(std::int64_t{});
    else convert(std::uint64_t{});
    return out;
}

/// Reads a 2-D (or, with `allow_1d`, 1-D as one row) array and converts it to T (the dtypes
/// `npy_values` takes, every value exactly).
template <class T>
[[nodiscard]] matrix<T> read_npy_matrix(const std::string& path, bool allow_1d = false) {
    const npy_array a = read_npy(path);
    if (!(a.shape.size() == 2 || (allow_1d && a.shape.size() == 1)))
        MOE_THROW("moe.npy.shape", path, ": expected a ", allow_1d ? "1-D or 2-D" : "2-D", " array, got ",
                  a.shape.size(), " dimensions");
    matrix<T> m(a.shape.size() == 2 ? a.shape[0] : 1, a.shape.back());
    m.values = npy_values<T>(a, path);
    return m;
}

/// Writes `data` (row-major, shape `shape`) as a version 1.0 .npy file. T: float, double,
/// int32_t or int64_t. Throws [moe.npy.open] when the file cannot be written.
template <class T>
void write_npy(const std::string& path, const T* data, const std::vector<std::size_t>& shape) {
    static_assert(detail::npy_descr<T>() != nullptr, "moe::io::write_npy: T must be float, double, int32_t or int64_t");
    std::string dims;
    std::size_t n = 1;
    for (std::size_t i = 0; i < shape.size(); ++i) {
        dims += (i ? ", " : "") + std::to_string(shape[i]);
        n *= shape[i];
    }
    if (shape.size() == 1) dims += ",";
    std::string h = std::string("{'descr': '") + detail::npy_descr<T>() + "', 'fortran_order': False, 'shape': (" + dims + "), }";
    const std::size_t total = 10 + h.size() + 1;
    h.append((64 - total % 64) % 64, ' ');
    h.push_back('\n');
    std::ofstream f(path, std::ios::binary);
    if (!f) MOE_THROW("moe.npy.open", "cannot write '", path, "'");
    const unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<unsigned char>(h.size() & 0xff),
                                   static_cast<unsigned char>(h.size() >> 8)};
    f.write(reinterpret_cast<const char*>(pre), 10);
    f.write(h.data(), static_cast<std::streamsize>(h.size()));
    f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n * sizeof(T)));
    if (!f) MOE_THROW("moe.npy.open", "failed writing '", path, "'");
}

template <class T>
void write_npy(const std::string& path, const matrix<T>& m) {
    write_npy(path, m.values.data(), {m.rows, m.cols});
}

}  // namespace moe::io
