#!/usr/bin/env bash
# The README's test command: installs what it needs, then builds and runs every test in three
# configurations: g++ / C++17 Release (with the benchmarks, built not run), clang++ / C++20
# Release (warnings as errors; the per-arch SIMD programs are left to the other two, which keeps
# the whole command under an hour on 2 cores), and clang++ / C++17 Debug under AddressSanitizer
# + UndefinedBehaviorSanitizer, which also runs the libFuzzer harnesses for 60 s each from the
# committed seed corpus, and the differential fuzzers (scalar against each SIMD arch) for 45 s
# each; then the Python package: installed with pip into a fresh venv (every
# instruction-set variant), its pytest suite run with torch required.
# Arguments pick steps (default: gcc clang asan python): bash cmake/test.sh [gcc] [clang] [asan] [python] [arm]
# `arm` (not in the default: ~24 minutes on 2 cores for the kernel and format tests alone, 19 of
# them cross-compiling) installs Debian's AArch64 cross compiler and qemu-user, cross-builds the
# plain-NEON, dotprod and i8mm test programs and runs them under qemu-aarch64 (ctest -L arm);
# MOE_ARM_TEST_SCOPE=full adds the router, capacity, arch and differential tests.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=" ${*:-gcc clang asan python} "
bash cmake/deps.sh test
bash cmake/deps.sh python
jobs=$(nproc 2>/dev/null || echo 2)
status=0
for config in "gcc g++ 17 Release OFF ON ON" "clang clang++ 20 Release OFF OFF OFF" "asan clang++ 17 Debug ON OFF ON"; do
  set -- $config
  [[ "$steps" == *" $1 "* ]] || continue
  dir="build-test-$1"
  echo "== $2, C++$3, $4, sanitizers $5 ($dir)"
  t0=$SECONDS
  # Optimisation: -O2 for g++ (the level distributions build with; GCC's -O3 took 2.3x as long to
  # compile these templates, and CI has 90 minutes), -O1 for the clang step (it checks C++20 and
  # clang's warnings; optimised code is the g++ step's), -O0 under the sanitizers.
  case "$1" in gcc) opt="-O2 -DNDEBUG" ;; clang) opt="-O1 -DNDEBUG" ;; *) opt="" ;; esac
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$4" -DCMAKE_CXX_COMPILER="$2" \
    ${opt:+-DCMAKE_CXX_FLAGS_RELEASE="$opt"} \
    -DMOE_TEST_CXX_STANDARD="$3" -DMOE_WERROR=ON -DMOE_SANITIZE="$5" -DMOE_BUILD_FUZZERS="$5" \
    -DMOE_FUZZ_SECONDS=60 -DMOE_BUILD_BENCHMARKS="$6" -DMOE_ARCH_TESTS="$7" > /dev/null
  cmake --build "$dir" -j "$jobs"
  echo "-- $1: built in $((SECONDS - t0)) s"
  (cd "$dir" && ctest -j "$jobs" --output-on-failure --timeout 600) || status=1
  echo "-- $1: built and tested in $((SECONDS - t0)) s"
done
if [[ "$steps" == *" arm "* ]]; then
  echo "== AArch64: cross-built with aarch64-linux-gnu-g++, run under qemu-aarch64 (build-test-arm)"
  for p in g++-aarch64-linux-gnu qemu-user; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing_arm="${missing_arm:-} $p"
  done
  if [ -n "${missing_arm:-}" ]; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends $missing_arm
  fi
  t0=$SECONDS
  cmake -S . -B build-test-arm -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG" \
    -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake -DMOE_WERROR=ON \
    -DMOE_BUILD_BENCHMARKS=OFF -DMOE_BUILD_EXAMPLES=OFF -DMOE_BUILD_PYTHON=OFF \
    -DMOE_ARM_TEST_SCOPE="${MOE_ARM_TEST_SCOPE:-kernels}" > /dev/null
  cmake --build build-test-arm -j "$jobs" --target moe_tests_neon moe_tests_dotprod moe_tests_i8mm
  (cd build-test-arm && ctest -j "$jobs" -L arm --output-on-failure) || status=1
  echo "-- arm: built and tested in $((SECONDS - t0)) s"
fi
if [[ "$steps" == *" python "* ]]; then
  echo "== Python package (pip install --no-build-isolation . into build-test-python/venv, pytest)"
  t0=$SECONDS
  # Debian's interpreter: the python3-* packages above live in its site-packages.
  py=/usr/bin/python3
  [ -x "$py" ] || py=python3
  rm -rf build-test-python/venv
  "$py" -m venv --system-site-packages build-test-python/venv
  # -O2 as in the g++ step (a user's `pip install .` keeps CMake's Release, -O3).
  CMAKE_ARGS="-DCMAKE_CXX_FLAGS_RELEASE='-O2 -DNDEBUG'" MOE_BUILD_JOBS="$jobs" \
    build-test-python/venv/bin/python -m pip install -q --no-build-isolation . || status=1
  (cd build-test-python && MOE_REQUIRE_TORCH=1 venv/bin/python -m pytest -q -p no:cacheprovider ../tests/python) || status=1
  echo "-- python: built and tested in $((SECONDS - t0)) s"
fi
echo "-- whole command: $SECONDS s"
exit $status
