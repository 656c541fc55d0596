// libFuzzer harness for the readers of outside files: byte 0 picks the reader (2: .npy, read
// as an array and as a routing trace; 4: a routing record, record.json up to the first NUL byte
// and indices.npy after it; otherwise even: safetensors, odd: GGUF), the rest is the file. A file either fails with a clean moe::error or opens, and then every tensor's bytes
// lie inside the file and read back as floats (element types); an .npy's bytes match its
// shape and dtype, and a trace read from it validates.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include <unistd.h>

#include <string>

#include <moe/io/gguf.hpp>
#include <moe/io/npy.hpp>
#include <moe/io/safetensors.hpp>
#include <moe/analysis/record.hpp>
#include <moe/analysis/trace.hpp>
#include <moe/presets.hpp>

namespace {

void require(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "fuzz_io: %s\n", what);
        std::abort();
    }
}

bool inside(const std::uint8_t* p, std::size_t n, const std::uint8_t* b, std::size_t size) {
    return p >= b && n <= size && static_cast<std::size_t>(p - b) <= size - n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const std::uint8_t* file = data + 1;
    const std::size_t n = size - 1;
    try {
        if (data[0] == 2) {
            // .npy (and traces) are read from files: one per fuzzing process.
            static const std::string path = "/tmp/moe_fuzz_io_" + std::to_string(::getpid()) + ".npy";
            std::FILE* f = std::fopen(path.c_str(), "wb");
            require(f != nullptr, "cannot write the temporary .npy");
            if (n) require(std::fwrite(file, 1, n, f) == n, "short write");
            std::fclose(f);
            const moe::io::npy_array a = moe::io::read_npy(path);
            require(a.bytes.size() == a.size() * moe::io::detail::descr_size(a.descr), "npy byte count");
            if (a.size() <= (1u << 14)) {
                const moe::routing_trace tr = moe::read_trace(path, moe::presets::mixtral(1));
                tr.validate();
                require(tr.indices.size() == tr.num_layers * tr.num_tokens * tr.top_k, "trace size");
            }
            return 0;
        }
        if (data[0] == 4) {
            static const std::string dir = "/tmp/moe_fuzz_record_" + std::to_string(::getpid());
            std::filesystem::create_directories(dir);
            const auto* nul = static_cast<const std::uint8_t*>(std::memchr(file, 0, n));
            const std::size_t js = nul ? static_cast<std::size_t>(nul - file) : n;
            auto put = [](const std::string& path, const std::uint8_t* p, std::size_t len) {
                std::FILE* f = std::fopen(path.c_str(), "wb");
                require(f != nullptr, "cannot write a temporary record file");
                if (len) require(std::fwrite(p, 1, len, f) == len, "short write");
                std::fclose(f);
            };
            put(dir + "/record.json", file, js);
            put(dir + "/indices.npy", file + js + (nul ? 1 : 0), nul ? n - js - 1 : 0);
            const moe::routing_record r = moe::read_record(dir);
            require(r.indices.size() == r.num_layers * r.num_tokens * r.top_k && r.layers.size() == r.num_layers, "record size");
            for (const std::int32_t e : r.indices) require(e >= -1 && static_cast<std::uint64_t>(e + 1) <= r.num_experts, "record index");
            require(r.weights.empty(), "record weights without weights.npy");
            return 0;
        }
        if (data[0] % 2 == 0) {
            const moe::io::safetensors_file f(file, n, "fuzz.safetensors");
            for (const auto& [name, e] : f.entries()) {
                const moe::io::tensor_view t = f.tensor(name);
                require(inside(t.data, t.bytes, file, n), "safetensors tensor outside the file");
                require(t.bytes == t.numel() * moe::io::dtype_size(t.type), "safetensors byte count");
                if (t.numel() <= (1u << 16)) (void)moe::io::to_float(t);
            }
        } else {
            const moe::io::gguf_file f(file, n, "fuzz.gguf");
            for (const moe::io::gguf_tensor& t : f.tensors()) {
                require(inside(t.data, t.bytes, file, n), "gguf tensor outside the file");
                require(&f.tensor(t.name) == &t, "gguf index");
                try {
                    const moe::io::tensor_view v = t.view();
                    require(v.bytes == v.numel() * moe::io::dtype_size(v.type), "gguf byte count");
                    if (v.numel() <= (1u << 16)) (void)moe::io::to_float(v);
                } catch (const moe::error&) {
                    // a block-quantized type: not an element type
                }
            }
            (void)f.metadata().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        }
    } catch (const moe::error&) {
        // rejected with a stable ID: fine
    }
    return 0;
}
