// .npy reading and writing: round trips, and every malformed input rejected verbatim.
#include <cmath>
#include <cstdio>
#include <limits>
#include <fstream>

#include "test_support.hpp"

using moe_test::error_of;

namespace {

std::string tmp_path(const std::string& name) { return std::string(MOE_TEST_TMP_DIR) + "/" + name; }

void write_raw(const std::string& path, const std::string& bytes) {
    std::ofstream f(path, std::ios::binary);
    f << bytes;
}

std::string npy_bytes(const std::string& header, std::size_t data_bytes) {
    std::string h = header;
    while ((10 + h.size() + 1) % 64) h.push_back(' ');
    h.push_back('\n');
    std::string out = "\x93NUMPY";
    out.push_back('\x01');
    out.push_back('\x00');
    out.push_back(static_cast<char>(h.size() & 0xff));
    out.push_back(static_cast<char>(h.size() >> 8));
    return out + h + std::string(data_bytes, '\0');
}

}  // namespace

TEST_CASE("npy: float, double and int32 round trips", "[npy]") {
    moe::matrix<float> m(3, 5);
    for (std::size_t i = 0; i < m.values.size(); ++i) m.values[i] = 0.25f * static_cast<float>(i) - 1.0f;
    moe::io::write_npy(tmp_path("f.npy"), m);
    CHECK(moe::io::read_npy_matrix<float>(tmp_path("f.npy")).values == m.values);
    const auto d = moe::io::read_npy_matrix<double>(tmp_path("f.npy"));
    CHECK(d.rows == 3);
    CHECK(d(2, 4) == Approx(2.5));
    const std::vector<std::int32_t> v = {4, -1, 7};
    moe::io::write_npy(tmp_path("i.npy"), v.data(), {3});
    const auto a = moe::io::read_npy(tmp_path("i.npy"));
    CHECK(a.shape == std::vector<std::size_t>{3});
    CHECK(a.descr == "<i4");
    CHECK(moe::io::read_npy_matrix<std::int32_t>(tmp_path("i.npy"), true).values == v);
}

TEST_CASE("npy: reads the committed files numpy wrote", "[npy]") {
    const auto l = moe::io::read_npy_matrix<float>(std::string(MOE_TEST_DATA_DIR) + "/router/mixtral.rand.logits.npy");
    CHECK(l.rows == 40);
    CHECK(l.cols == 8);
}

TEST_CASE("npy: float16 arrays are read exactly (normal, subnormal, signed zero, infinity)", "[npy]") {
    // IEEE binary16: 1.0, -2.5, 65504 (max), 2^-24 (smallest subnormal), 3 * 2^-24, -0.0, +inf, 2^-14.
    const std::uint16_t bits[8] = {0x3C00, 0xC100, 0x7BFF, 0x0001, 0x0003, 0x8000, 0x7C00, 0x0400};
    std::string file = npy_bytes("{'descr': '<f2', 'fortran_order': False, 'shape': (2, 4), }", 0);
    file.append(reinterpret_cast<const char*>(bits), sizeof(bits));
    write_raw(tmp_path("f16.npy"), file);
    const auto m = moe::io::read_npy_matrix<float>(tmp_path("f16.npy"));
    CHECK(m.values == std::vector<float>{1.0f, -2.5f, 65504.0f, std::ldexp(1.0f, -24), 3 * std::ldexp(1.0f, -24), -0.0f,
                                         std::numeric_limits<float>::infinity(), std::ldexp(1.0f, -14)});
    CHECK(std::signbit(m.values[5]));
    CHECK(moe::io::read_npy_matrix<double>(tmp_path("f16.npy")).values[1] == -2.5);
}

TEST_CASE("npy: malformed files get clear errors", "[npy][errors]") {
    CHECK(error_of([] { (void)moe::io::read_npy(tmp_path("missing.npy")); }) ==
          "[moe.npy.open] cannot open '" + tmp_path("missing.npy") + "'");
    write_raw(tmp_path("bad_magic.npy"), "PK\x03\x04 not numpy at all");
    CHECK(error_of([] { (void)moe::io::read_npy(tmp_path("bad_magic.npy")); }) ==
          "[moe.npy.format] " + tmp_path("bad_magic.npy") + ": not an .npy file (bad magic)");
    write_raw(tmp_path("huge.npy"), npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", 0));
    CHECK(error_of([] { (void)moe::io::read_npy(tmp_path("huge.npy")); }) ==
          "[moe.npy.format] " + tmp_path("huge.npy") + ": shape (4294967296, 4294967296) is too large");
    write_raw(tmp_path("big_endian.npy"), npy_bytes("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }", 16));
    CHECK(error_of([] { (void)moe::io::read_npy(tmp_path("big_endian.npy")); }) ==
          "[moe.npy.dtype] " + tmp_path("big_endian.npy") +
              ": dtype '>f4' is not supported (expected little-endian float16/32/64 or a signed or unsigned integer of 8 to 64 bits)");
    write_raw(tmp_path("fortran.npy"), npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16));
    CHECK(error_of([] { (void)moe::io::read_npy(tmp_path("fortran.npy")); }) ==
          "[moe.npy.order] " + tmp_path("fortran.npy") + ": Fortran-ordered arrays are not supported (save with C order)");
    write_raw(tmp_path("short.npy"), npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 7));
    CHECK(error_of([] { (void)moe::io::read_npy(tmp_path("short.npy")); }) ==
          "[moe.npy.truncated] " + tmp_path("short.npy") + ": expected 16 bytes of data for shape (2, 2)");
    write_raw(tmp_path("cube.npy"), npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 2), }", 16));
    CHECK(error_of([] { (void)moe::io::read_npy_matrix<float>(tmp_path("cube.npy")); }) ==
          "[moe.npy.shape] " + tmp_path("cube.npy") + ": expected a 2-D array, got 3 dimensions");
    write_raw(tmp_path("floats.npy"), npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }", 8));
    CHECK(error_of([] { (void)moe::io::read_npy_matrix<std::int32_t>(tmp_path("floats.npy")); }) ==
          "[moe.npy.dtype] " + tmp_path("floats.npy") + ": dtype '<f4' where an integer dtype was expected");
}

namespace {
/// A C-order .npy of `values` stored as the little-endian integer type S (descr `d`).
template <class S>
std::string int_npy(const char* d, const std::vector<S>& values) {
    std::string file = npy_bytes(std::string("{'descr': '") + d + "', 'fortran_order': False, 'shape': (1, " + std::to_string(values.size()) + "), }", 0);
    file.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(S));
    return file;
}
}  // namespace

TEST_CASE("npy: integer arrays of every width read exactly, into floats and integers", "[npy]") {
    // Expert loads are counts (EPLB's input is an int64 tensor); numpy writes '|u1', '<i2', '<u8', ...
    write_raw(tmp_path("u1.npy"), int_npy<std::uint8_t>("|u1", {0, 7, 255}));
    CHECK(moe::io::read_npy_matrix<float>(tmp_path("u1.npy")).values == std::vector<float>{0, 7, 255});
    write_raw(tmp_path("i2.npy"), int_npy<std::int16_t>("<i2", {-32768, 3, 32767}));
    CHECK(moe::io::read_npy_matrix<double>(tmp_path("i2.npy")).values == std::vector<double>{-32768, 3, 32767});
    CHECK(moe::io::read_npy_matrix<std::int32_t>(tmp_path("i2.npy")).values == std::vector<std::int32_t>{-32768, 3, 32767});
    write_raw(tmp_path("i8.npy"), int_npy<std::int64_t>("<i8", {16777216, -5, 40}));
    CHECK(moe::io::read_npy_matrix<float>(tmp_path("i8.npy")).values == std::vector<float>{16777216.0f, -5, 40});
    CHECK(moe::io::read_npy_matrix<std::int32_t>(tmp_path("i8.npy")).values == std::vector<std::int32_t>{16777216, -5, 40});
    write_raw(tmp_path("i1.npy"), int_npy<std::int8_t>("=i1", {-128, 1}));  // '=' and '|' spell the same bytes
    CHECK(moe::io::read_npy_matrix<std::int64_t>(tmp_path("i1.npy")).values == std::vector<std::int64_t>{-128, 1});
    // Only exact conversions: 2^24 + 1 has no float32, 2^31 no int32, 2^64 - 1 no int64.
    write_raw(tmp_path("i8_inexact.npy"), int_npy<std::int64_t>("<i8", {1, 16777217}));
    CHECK(error_of([] { (void)moe::io::read_npy_matrix<float>(tmp_path("i8_inexact.npy")); }) ==
          "[moe.npy.range] " + tmp_path("i8_inexact.npy") + ": element 1 = 16777217 (<i8) is not exactly representable as float32");
    CHECK(moe::io::read_npy_matrix<double>(tmp_path("i8_inexact.npy")).values[1] == 16777217.0);
    write_raw(tmp_path("i8_big.npy"), int_npy<std::int64_t>("<i8", {2147483648LL}));
    CHECK(error_of([] { (void)moe::io::read_npy_matrix<std::int32_t>(tmp_path("i8_big.npy")); }) ==
          "[moe.npy.range] " + tmp_path("i8_big.npy") + ": element 0 = 2147483648 (<i8) is not exactly representable as int32");
    write_raw(tmp_path("u8_big.npy"), int_npy<std::uint64_t>("<u8", {~std::uint64_t{0}}));
    CHECK(error_of([] { (void)moe::io::read_npy_matrix<std::int64_t>(tmp_path("u8_big.npy")); }) ==
          "[moe.npy.range] " + tmp_path("u8_big.npy") + ": element 0 = 18446744073709551615 (<u8) is not exactly representable as int64");
    write_raw(tmp_path("neg.npy"), int_npy<std::int32_t>("<i4", {-1}));
    CHECK(moe::io::read_npy_matrix<std::int64_t>(tmp_path("neg.npy")).values == std::vector<std::int64_t>{-1});
}
