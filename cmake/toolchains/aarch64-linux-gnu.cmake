# Cross-compiles moe's programs for AArch64 Linux with Debian's cross compiler and runs them
# under qemu-user (packages g++-aarch64-linux-gnu and qemu-user; `bash cmake/test.sh arm`
# installs both). ctest runs every test program through qemu-aarch64; the CPU qemu emulates
# comes from the QEMU_CPU environment variable (the ARM tests set it per test: cortex-a53 for
# plain NEON, neoverse-n1 for dotprod, max for i8mm and bf16).
#
#   cmake -S . -B build-arm -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(MOE_CROSS_SYSROOT /usr/aarch64-linux-gnu)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L ${MOE_CROSS_SYSROOT})

# Libraries and headers from the cross sysroot; moe's dependencies are header-only packages
# installed for the build machine (Eigen, xsimd, xtl, nlohmann/json, Catch2), whose CMake
# packages are found there. Their headers live in /usr/include next to the build machine's C
# library, so that directory must come after the cross compiler's own: it is searched with
# -idirafter, and listed as implicit so that the imported targets do not put it first.
set(CMAKE_FIND_ROOT_PATH ${MOE_CROSS_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
set(CMAKE_CXX_FLAGS_INIT "-idirafter /usr/include")
set(CMAKE_C_FLAGS_INIT "-idirafter /usr/include")
list(APPEND CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES /usr/include)
list(APPEND CMAKE_C_IMPLICIT_INCLUDE_DIRECTORIES /usr/include)
# Debian installs xsimd's CMake package under the build machine's multiarch directory
# (/usr/lib/x86_64-linux-gnu/cmake/xsimd), which a search for AArch64 does not visit.
if(NOT xsimd_DIR)
  file(GLOB _moe_host_xsimd LIST_DIRECTORIES true /usr/lib/*/cmake/xsimd)
  list(FILTER _moe_host_xsimd EXCLUDE REGEX "aarch64")
  if(_moe_host_xsimd)
    list(GET _moe_host_xsimd 0 xsimd_DIR)
  endif()
endif()
