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
          "[moe.npy.dtype] " + tmp_path("big_endian.npy") + ": dtype '>f4' is not supported (expected <f2, <f4, <f8, <i4 or <i8)");
    write_raw(tmp_path("fortran.npy"), npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16));
    CHECK(error_of([] { (void)moe::io::read_npy(tmp_path("fortran.npy")); }) ==
          "[moe.npy.order] " + tmp_path("fortran.npy") + ": Fortran-ordered arrays are not supported (save with C order)");
    write_raw(tmp_path("short.npy"), npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 7));
    CHECK(error_of([] { (void)moe::io::read_npy(tmp_path("short.npy")); }) ==
          "[moe.npy.truncated] " + tmp_path("short.npy") + ": expected 16 bytes of data for shape (2, 2)");
    write_raw(tmp_path("cube.npy"), npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 2), }", 16));
    CHECK(error_of([] { (void)moe::io::read_npy_matrix<float>(tmp_path("cube.npy")); }) ==
          "[moe.npy.shape] " + tmp_path("cube.npy") + ": expected a 2-D array, got 3 dimensions");
    write_raw(tmp_path("ints.npy"), npy_bytes("{'descr': '<i8', 'fortran_order': False, 'shape': (1, 2), }", 16));
    CHECK(error_of([] { (void)moe::io::read_npy_matrix<float>(tmp_path("ints.npy")); }) ==
          "[moe.npy.dtype] " + tmp_path("ints.npy") + ": dtype '<i8' where float16, float32 or float64 was expected");
}
