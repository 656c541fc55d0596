/// @file io/mapped_file.hpp
/// A read-only view of a whole file: memory-mapped on POSIX (pages are read when touched, so
/// loading one layer of a checkpoint reads that layer's bytes only), read into memory elsewhere.
/// Move-only; the bytes stay valid while the object lives.
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define MOE_IO_HAVE_MMAP 1
#endif

#include "../config.hpp"

namespace moe::io {

class mapped_file {
public:
    mapped_file() = default;

    /// Maps `path` read-only. Throws [<id>] "cannot open '<path>'" with the caller's error ID
    /// (e.g. moe.io.safetensors), so each reader reports its own.
    mapped_file(const std::string& path, const char* id) : path_(path) {
#if defined(MOE_IO_HAVE_MMAP)
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) MOE_THROW(id, "cannot open '", path, "'");
        struct stat st {};
        if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            ::close(fd);
            MOE_THROW(id, "cannot open '", path, "': not a regular file");
        }
        size_ = static_cast<std::size_t>(st.st_size);
        if (size_ > 0) {
            void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) {
                ::close(fd);
                MOE_THROW(id, "cannot map '", path, "' (", size_, " bytes)");
            }
            data_ = static_cast<const std::uint8_t*>(p);
            mapped_ = true;
        }
        ::close(fd);
#else
        std::ifstream f(path, std::ios::binary | std::ios::ate);
        if (!f) MOE_THROW(id, "cannot open '", path, "'");
        copy_.resize(static_cast<std::size_t>(f.tellg()));
        f.seekg(0);
        f.read(reinterpret_cast<char*>(copy_.data()), static_cast<std::streamsize>(copy_.size()));
        data_ = copy_.data();
        size_ = copy_.size();
#endif
    }

    mapped_file(const mapped_file&) = delete;
    mapped_file& operator=(const mapped_file&) = delete;
    mapped_file(mapped_file&& o) noexcept { swap(o); }
    mapped_file& operator=(mapped_file&& o) noexcept {
        if (this != &o) {
            release();
            swap(o);
        }
        return *this;
    }
    ~mapped_file() { release(); }

    /// Drops the pages of [p, p + n) (inside this file's bytes) from the process's resident
    /// set: bytes already copied elsewhere (packed weights) stop counting twice. Touched again,
    /// they are read from the file again (a read-only, never-written mapping), so the view stays
    /// valid. A no-op where the file was read into memory, or for a range outside it.
    void drop_pages(const std::uint8_t* p, std::size_t n) const noexcept {
#if defined(MOE_IO_HAVE_MMAP) && defined(MADV_DONTNEED)
        if (!mapped_ || n == 0 || p < data_ || p + n > data_ + size_) return;
        const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
        const std::uintptr_t b = reinterpret_cast<std::uintptr_t>(p) / page * page;
        const std::uintptr_t e = reinterpret_cast<std::uintptr_t>(p + n);
        ::madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
#else
        static_cast<void>(p);
        static_cast<void>(n);
#endif
    }

    [[nodiscard]] const std::uint8_t* data() const noexcept { return data_; }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    [[nodiscard]] const std::string& path() const noexcept { return path_; }

private:
    void swap(mapped_file& o) noexcept {
        std::swap(path_, o.path_);
        std::swap(data_, o.data_);
        std::swap(size_, o.size_);
        std::swap(mapped_, o.mapped_);
        std::swap(copy_, o.copy_);
    }
    void release() noexcept {
#if defined(MOE_IO_HAVE_MMAP)
        if (mapped_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
#endif
        data_ = nullptr;
        size_ = 0;
        mapped_ = false;
        copy_.clear();
    }

    std::string path_;
    const std::uint8_t* data_ = nullptr;
    std::size_t size_ = 0;
    bool mapped_ = false;
    std::vector<std::uint8_t> copy_;
};

}  // namespace moe::io
