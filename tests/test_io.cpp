// Checkpoint readers: files written by tests/gen_io_golden.py (numpy, from the published
// formats) read back value for value; every malformed file rejected verbatim.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <moe/io/gguf.hpp>
#include <moe/io/safetensors.hpp>

#include "test_support.hpp"

using moe_test::error_of;

namespace {

const std::string data_dir = std::string(MOE_TEST_DATA_DIR) + "/io";
std::string tmp_path(const std::string& name) { return std::string(MOE_TEST_TMP_DIR) + "/" + name; }

void write_raw(const std::string& path, const std::string& bytes) {
    std::ofstream f(path, std::ios::binary);
    f << bytes;
}

/// A safetensors file with the given JSON header (padded to 8) and `data_bytes` zero bytes.
std::string st_bytes(std::string header, std::size_t data_bytes, std::uint64_t len_override = 0) {
    while (header.size() % 8) header.push_back(' ');
    std::uint64_t n = len_override ? len_override : header.size();
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
    return out + header + std::string(data_bytes, '\0');
}

std::string st_error(const std::string& name, const std::string& bytes) {
    const std::string p = tmp_path(name);
    write_raw(p, bytes);
    return error_of([&] { moe::io::safetensors_file f(p); });
}

std::uint32_t bits_of(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

}  // namespace

TEST_CASE("safetensors: every dtype read value for value against numpy's file", "[io][safetensors]") {
    const moe::io::safetensors_file f(data_dir + "/tiny.safetensors");
    std::ifstream ej(data_dir + "/tiny.expected.json");
    const nlohmann::json expected = nlohmann::json::parse(ej);
    REQUIRE(f.entries().size() == expected.size());
    CHECK(f.metadata().at("format") == "pt");
    for (auto it = expected.begin(); it != expected.end(); ++it) {
        INFO("tensor " << it.key());
        REQUIRE(f.contains(it.key()));
        const moe::io::tensor_view t = f.tensor(it.key());
        CHECK(std::string(moe::io::dtype_name(t.type)) == it.value()["dtype"].get<std::string>());
        CHECK(t.shape == it.value()["shape"].get<std::vector<std::size_t>>());
        CHECK(t.bytes == t.numel() * moe::io::dtype_size(t.type));
        const std::vector<float> v = moe::io::to_float(t);
        const auto want = it.value()["values"].get<std::vector<double>>();
        REQUIRE(v.size() == want.size());
        for (std::size_t i = 0; i < v.size(); ++i) {
            CAPTURE(i, v[i], want[i]);
            CHECK(bits_of(v[i]) == bits_of(static_cast<float>(want[i])));  // -0.0 included
        }
    }
    // Zero-copy: the view points into the mapping, the same bytes every time.
    CHECK(f.tensor("a.f32").data == f.tensor("a.f32").data);
    CHECK(error_of([&] { (void)f.tensor("nope"); }) == "[moe.io.safetensors] " + data_dir + "/tiny.safetensors: no tensor 'nope'");
    CHECK(error_of([&] {
              std::vector<float> out(3);
              moe::io::to_float(f.tensor("a.f32"), out.data(), out.size());
          }) == "[moe.io.tensor] tensor 'a.f32' has 6 elements, asked for 3");
}

TEST_CASE("safetensors: sharded folders through model.safetensors.index.json", "[io][safetensors]") {
    const moe::io::safetensors_checkpoint ck(data_dir + "/sharded");
    CHECK(ck.config()["model_type"] == "mixtral");
    CHECK(ck.names() == std::vector<std::string>{"x", "y"});
    CHECK(moe::io::to_float(ck.tensor("x")) == std::vector<float>{0, 1, 2, 3, 4, 5});
    CHECK(moe::io::to_float(ck.tensor("y")) == std::vector<float>{-0.0f, -1, -2, -3});
    CHECK(ck.tensor("y").shape == std::vector<std::size_t>{4});
    CHECK(error_of([&] { (void)ck.tensor("z"); }) == "[moe.io.safetensors] " + data_dir + "/sharded: no tensor 'z'");

    // A single-file folder, and folders that are not checkpoints.
    namespace fs = std::filesystem;
    const std::string dir = tmp_path("moe_st_single");
    fs::create_directories(dir);
    fs::copy_file(data_dir + "/tiny.safetensors", dir + "/model.safetensors", fs::copy_options::overwrite_existing);
    write_raw(dir + "/config.json", "{\"model_type\": \"olmoe\"}");
    const moe::io::safetensors_checkpoint single(dir);
    CHECK(single.names().size() == 10);
    CHECK(single.tensor("e.i8").shape == std::vector<std::size_t>{4});

    const std::string bad = tmp_path("moe_st_bad");
    fs::remove_all(bad);
    fs::create_directories(bad);
    auto ck_error = [&] { return error_of([&] { moe::io::safetensors_checkpoint c(bad); }); };
    CHECK(ck_error() == "[moe.io.config] cannot open '" + bad + "/config.json'");
    write_raw(bad + "/config.json", "{\"model_type\": ");
    CHECK(ck_error() == "[moe.io.config] " + bad + "/config.json: not valid JSON");
    write_raw(bad + "/config.json", "[1]");
    CHECK(ck_error() == "[moe.io.config] " + bad + "/config.json: not a JSON object");
    write_raw(bad + "/config.json", "{}");
    CHECK(ck_error() == "[moe.io.safetensors] cannot open '" + bad + "/model.safetensors'");
    write_raw(bad + "/model.safetensors.index.json", "{\"weight_map\": {\"x\": \"../escape.safetensors\"}}");
    CHECK(ck_error() == "[moe.io.safetensors] " + bad +
                            "/model.safetensors.index.json: weight_map names '../escape.safetensors', not a file of this folder");
    write_raw(bad + "/model.safetensors.index.json", "{\"metadata\": {}}");
    CHECK(ck_error() == "[moe.io.safetensors] " + bad + "/model.safetensors.index.json: no weight_map object");
    write_raw(bad + "/model.safetensors.index.json", "{\"weight_map\": {\"x\": \"s.safetensors\"}}");
    CHECK(ck_error() == "[moe.io.safetensors] cannot open '" + bad + "/s.safetensors'");
    fs::copy_file(data_dir + "/tiny.safetensors", bad + "/s.safetensors", fs::copy_options::overwrite_existing);
    CHECK(ck_error() == "[moe.io.safetensors] " + bad + "/model.safetensors.index.json: 'x' is not in " + bad + "/s.safetensors");
}

TEST_CASE("safetensors: malformed files fail with [moe.io.safetensors], verbatim", "[io][safetensors]") {
    const std::string ok = "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    REQUIRE(st_error("ok.safetensors", st_bytes(ok, 8)).empty());
    const std::string p = tmp_path("bad.safetensors");
    auto err = [&](const std::string& bytes) { return st_error("bad.safetensors", bytes); };
    CHECK(err("") == "[moe.io.safetensors] " + p + ": truncated (0 bytes; a safetensors file starts with an 8-byte header length)");
    CHECK(err(std::string(5, 'x')) ==
          "[moe.io.safetensors] " + p + ": truncated (5 bytes; a safetensors file starts with an 8-byte header length)");
    CHECK(err(st_bytes(ok, 8, 1000)) == "[moe.io.safetensors] " + p + ": header length 1000 runs past the end of the file (72 bytes)");
    CHECK(err(st_bytes(ok, 8, 0xffffffffffffffffull)) ==
          "[moe.io.safetensors] " + p + ": header length 18446744073709551615 runs past the end of the file (72 bytes)");
    // An .npy file: its magic read as a length is far past the end.
    CHECK(err(std::string("\x93NUMPY\x01\x00{'descr': '<f4'}", 24)) ==
          "[moe.io.safetensors] " + p + ": header length 379676406402707 runs past the end of the file (24 bytes)");
    CHECK(err(st_bytes("PK\x03\x04", 0)) == "[moe.io.safetensors] " + p + ": header is not a JSON object (bad magic?)");
    CHECK(err(st_bytes("[1, 2]", 0)) == "[moe.io.safetensors] " + p + ": header is not a JSON object (bad magic?)");
    CHECK(err(st_bytes("{\"t\": ", 0)) == "[moe.io.safetensors] " + p + ": not valid JSON");
    CHECK(err(st_bytes("{\"t\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 1)) ==
          "[moe.io.safetensors] " + p + ": tensor 't' has unsupported dtype \"F4\"");
    CHECK(err(st_bytes("{\"t\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8)) ==
          "[moe.io.safetensors] " + p + ": tensor 't' lacks dtype, shape or data_offsets");
    CHECK(err(st_bytes("{\"t\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8)) ==
          "[moe.io.safetensors] " + p + ": tensor 't' has a malformed shape");
    CHECK(err(st_bytes("{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,8]}}", 8)) ==
          "[moe.io.safetensors] " + p + ": tensor 't' shape overflows");
    CHECK(err(st_bytes("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8)) ==
          "[moe.io.safetensors] " + p + ": tensor 't' has malformed data_offsets");
    CHECK(err(st_bytes("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", 8)) ==
          "[moe.io.safetensors] " + p + ": tensor 't' data_offsets [0, 16] outside the data (8 bytes)");
    CHECK(err(st_bytes("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8)) ==
          "[moe.io.safetensors] " + p + ": tensor 't' data_offsets [8, 0] outside the data (8 bytes)");
    CHECK(err(st_bytes("{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8)) ==
          "[moe.io.safetensors] " + p + ": tensor 't' holds 8 bytes, its dtype and shape need 12");
    CHECK(err(st_bytes("{\"__metadata__\": [1]}", 0)) == "[moe.io.safetensors] " + p + ": __metadata__ is not an object");
    CHECK(error_of([] { moe::io::safetensors_file f(tmp_path("does_not_exist.safetensors")); }) ==
          "[moe.io.safetensors] cannot open '" + tmp_path("does_not_exist.safetensors") + "'");
    CHECK(error_of([] { moe::io::safetensors_file f(MOE_TEST_TMP_DIR); }) ==
          "[moe.io.safetensors] cannot open '" + std::string(MOE_TEST_TMP_DIR) + "': not a regular file");
}

// ---------------------------------------------------------------------------------------------
// GGUF


namespace {

/// Builds GGUF bytes field by field.
struct gguf_builder {
    std::string b;
    template <class T>
    gguf_builder& put(T v) {
        b.append(reinterpret_cast<const char*>(&v), sizeof(T));
        return *this;
    }
    gguf_builder& str(const std::string& s) {
        put<std::uint64_t>(s.size());
        b += s;
        return *this;
    }
    gguf_builder& header(std::uint64_t tensors, std::uint64_t kv, std::uint32_t version = 3) {
        b += "GGUF";
        return put(version).put(tensors).put(kv);
    }
    gguf_builder& kv_u32(const std::string& key, std::uint32_t v) { return str(key).put<std::uint32_t>(4).put(v); }
    gguf_builder& tensor(const std::string& name, std::vector<std::uint64_t> ne, std::uint32_t type, std::uint64_t offset) {
        str(name).put<std::uint32_t>(static_cast<std::uint32_t>(ne.size()));
        for (auto d : ne) put(d);
        return put(type).put(offset);
    }
    gguf_builder& pad_to(std::size_t a) {
        while (b.size() % a) b.push_back('\0');
        return *this;
    }
    gguf_builder& zeros(std::size_t n) {
        b.append(n, '\0');
        return *this;
    }
};

std::string gguf_error(const std::string& bytes) {
    const std::string p = tmp_path("bad.gguf");
    write_raw(p, bytes);
    return error_of([&] { moe::io::gguf_file f(p); });
}

}  // namespace

TEST_CASE("gguf: metadata, tensor infos and bytes against numpy's file", "[io][gguf]") {
    const moe::io::gguf_file f(data_dir + "/tiny.gguf");
    std::ifstream ej(data_dir + "/tiny.gguf.json");
    const nlohmann::json expected = nlohmann::json::parse(ej);
    CHECK(f.version() == 3);
    CHECK(f.alignment() == 64);
    CHECK(f.metadata().size() == expected["metadata"].size());
    for (auto it = expected["metadata"].begin(); it != expected["metadata"].end(); ++it) {
        INFO("key " << it.key());
        REQUIRE(f.has(it.key()));
        CHECK(f.metadata()[it.key()] == it.value());
    }
    CHECK(f.get<std::string>("general.architecture") == "mixtral");
    CHECK(f.get<std::uint32_t>("mixtral.expert_count") == 4);
    CHECK(f.get<double>("x.f64") == 0.1);
    CHECK(f.get<bool>("x.bool"));
    CHECK(f.get_or<int>("mixtral.expert_shared_count", 0) == 0);
    CHECK(error_of([&] { (void)f.get<std::uint32_t>("general.architecture"); }) ==
          "[moe.io.gguf] " + data_dir + "/tiny.gguf: key 'general.architecture' is string, not the kind asked for");
    CHECK(error_of([&] { (void)f.get<std::uint32_t>("nope"); }) == "[moe.io.gguf] " + data_dir + "/tiny.gguf: no key 'nope'");

    REQUIRE(f.tensors().size() == expected["tensors"].size());
    for (auto it = expected["tensors"].begin(); it != expected["tensors"].end(); ++it) {
        INFO("tensor " << it.key());
        const moe::io::gguf_tensor& t = f.tensor(it.key());
        CHECK(static_cast<std::uint32_t>(t.type) == it.value()["type"].get<std::uint32_t>());
        CHECK(t.ne == it.value()["ne"].get<std::vector<std::uint64_t>>());
        CHECK(t.offset == it.value()["offset"].get<std::uint64_t>());
        static const char* hex = "0123456789abcdef";
        std::string h;
        for (std::size_t i = 0; i < t.bytes; ++i) h += {hex[t.data[i] >> 4], hex[t.data[i] & 15]};
        CHECK(h == it.value()["bytes"].get<std::string>());
    }
    for (auto it = expected["values"].begin(); it != expected["values"].end(); ++it) {
        INFO("tensor " << it.key());
        const std::vector<float> v = moe::io::to_float(f.tensor(it.key()).view());
        const auto want = it.value().get<std::vector<double>>();
        REQUIRE(v.size() == want.size());
        for (std::size_t i = 0; i < v.size(); ++i) CHECK(bits_of(v[i]) == bits_of(static_cast<float>(want[i])));
    }
    const auto& exps = f.tensor("blk.0.ffn_gate_exps.weight");
    CHECK(exps.shape() == std::vector<std::size_t>{4, 16, 64});  // [E, F, H]
    CHECK(std::string(exps.type_name()) == "Q8_0");
    CHECK(exps.bytes == 4 * 16 * 2 * 34);
    CHECK(error_of([&] { (void)exps.view(); }) == "[moe.io.gguf] tensor 'blk.0.ffn_gate_exps.weight' is Q8_0, not an element type");
    CHECK(error_of([&] { (void)f.tensor("blk.1.ffn_gate_inp.weight"); }) ==
          "[moe.io.gguf] " + data_dir + "/tiny.gguf: no tensor 'blk.1.ffn_gate_inp.weight'");
}

TEST_CASE("gguf: malformed files fail with [moe.io.gguf], verbatim", "[io][gguf]") {
    const std::string p = tmp_path("bad.gguf");
    const std::string e = "[moe.io.gguf] " + p + ": ";
    // A valid file first: one F32 tensor of 8 values.
    auto good = [] {
        gguf_builder g;
        g.header(1, 1).kv_u32("general.alignment", 32).tensor("t", {8}, 0, 0).pad_to(32).zeros(32);
        return g.b;
    };
    REQUIRE(gguf_error(good()).empty());
    CHECK(gguf_error("") == e + "not a GGUF file (bad magic)");
    CHECK(gguf_error("GGML....") == e + "not a GGUF file (bad magic)");
    CHECK(gguf_error(gguf_builder{}.header(0, 0, 1).b) == e + "GGUF version 1 is not supported (2 and 3 are; a big-endian file reads as a large version)");
    CHECK(gguf_error(good().substr(0, 10)) == e + "truncated in the header at byte 8 (8 bytes needed, 2 left)");
    CHECK(gguf_error(gguf_builder{}.header(0, 1000).b) == e + "1000 metadata entries cannot fit in the file");
    CHECK(gguf_error(gguf_builder{}.header(0, 1).put<std::uint64_t>(1000).b + std::string(12, 'k')) ==
          e + "string of 1000 bytes in a metadata key runs past the end of the file");
    CHECK(gguf_error(gguf_builder{}.header(0, 1).str("k").put<std::uint32_t>(13).zeros(8).b) == e + "key 'k' has unknown value type 13");
    CHECK(gguf_error(gguf_builder{}.header(0, 1).str("k").put<std::uint32_t>(7).put<std::uint8_t>(2).zeros(8).b) ==
          e + "key 'k' has bool value 2");
    CHECK(gguf_error(gguf_builder{}.header(0, 1).str("k").put<std::uint32_t>(9).put<std::uint32_t>(4).put<std::uint64_t>(1u << 30).zeros(8).b) ==
          e + "key 'k' array of 1073741824 values runs past the end of the file");
    CHECK(gguf_error(gguf_builder{}.header(0, 1).str("k").put<std::uint32_t>(9).put<std::uint32_t>(9).put<std::uint64_t>(1).put<std::uint32_t>(4).put<std::uint64_t>(0).b) ==
          e + "key 'k' nests arrays");
    CHECK(gguf_error(gguf_builder{}.header(0, 2).kv_u32("k", 1).kv_u32("k", 2).b) == e + "duplicate key 'k'");
    CHECK(gguf_error(gguf_builder{}.header(0, 1).kv_u32("general.alignment", 48).b) == e + "general.alignment 48 is not a power of two up to 2^20");
    CHECK(gguf_error(gguf_builder{}.header(0, 1).str("general.alignment").put<std::uint32_t>(8).str("x").b) ==
          e + "general.alignment \"x\" is not a power of two up to 2^20");
    CHECK(gguf_error(gguf_builder{}.header(1000, 0).b) == e + "1000 tensors cannot fit in the file");
    auto one = [](std::vector<std::uint64_t> ne, std::uint32_t type, std::uint64_t off, std::size_t data) {
        gguf_builder g;
        g.header(1, 0).tensor("t", std::move(ne), type, off).pad_to(32).zeros(data);
        return g.b;
    };
    CHECK(gguf_error(one({}, 0, 0, 64)) == e + "tensor 't' has 0 dimensions (1 to 4)");
    CHECK(gguf_error(one({1, 1, 1, 1, 1}, 0, 0, 64)) == e + "tensor 't' has 5 dimensions (1 to 4)");
    CHECK(gguf_error(one({8}, 4, 0, 64)) == e + "tensor 't' has unsupported ggml type 4");
    CHECK(gguf_error(one({8}, 1000, 0, 64)) == e + "tensor 't' has unsupported ggml type 1000");
    CHECK(gguf_error(one({48}, 8, 0, 64)) == e + "tensor 't' ne[0]=48 is not a multiple of Q8_0's block of 32");
    CHECK(gguf_error(one({1ull << 32, 1ull << 32, 1ull << 32}, 0, 0, 64)) == e + "tensor 't' shape overflows");
    CHECK(gguf_error(one({8}, 0, 16, 64)) == e + "tensor 't' offset 16 is not a multiple of the alignment 32");
    CHECK(gguf_error(one({8}, 0, 0, 31)) == e + "tensor 't' (32 bytes at offset 0) runs past the end of the data (31 bytes)");
    CHECK(gguf_error(one({8}, 0, 1ull << 62, 32)) == e + "tensor 't' (32 bytes at offset 4611686018427387904) runs past the end of the data (32 bytes)");
    gguf_builder dup;
    dup.header(2, 0).tensor("t", {8}, 0, 0).tensor("t", {8}, 0, 32).pad_to(32).zeros(64);
    CHECK(gguf_error(dup.b) == e + "duplicate tensor 't'");
    // Cut anywhere, a valid file fails cleanly (never reads past the end).
    const std::string g = good();
    for (std::size_t n = 0; n < g.size(); ++n) CHECK(!gguf_error(g.substr(0, n)).empty());
}
