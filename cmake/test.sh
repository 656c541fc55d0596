#!/usr/bin/env bash
# The README's test command: installs what it needs, then builds and runs every test in three
# configurations: g++ / C++17 Release (with the benchmarks, built not run), clang++ / C++20
# Release (warnings as errors; the per-arch SIMD programs are left to the other two, which keeps
# the whole command near 40 minutes on 2 cores), and clang++ / C++17 Debug under AddressSanitizer
# + UndefinedBehaviorSanitizer, which also runs the libFuzzer harnesses for 60 s each from the
# committed seed corpus, and the differential fuzzers (scalar against each SIMD arch) for 45 s
# each; then the Python package: installed with pip into a fresh venv (every
# instruction-set variant), its pytest suite run with torch required.
# Arguments pick steps (default: all): bash cmake/test.sh [gcc] [clang] [asan] [python]
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
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$4" -DCMAKE_CXX_COMPILER="$2" \
    -DMOE_TEST_CXX_STANDARD="$3" -DMOE_WERROR=ON -DMOE_SANITIZE="$5" -DMOE_BUILD_FUZZERS="$5" \
    -DMOE_FUZZ_SECONDS=60 -DMOE_BUILD_BENCHMARKS="$6" -DMOE_ARCH_TESTS="$7" > /dev/null
  cmake --build "$dir" -j "$jobs"
  (cd "$dir" && ctest -j "$jobs" --output-on-failure --timeout 600) || status=1
done
if [[ "$steps" == *" python "* ]]; then
  echo "== Python package (pip install --no-build-isolation . into build-test-python/venv, pytest)"
  # Debian's interpreter: the python3-* packages above live in its site-packages.
  py=/usr/bin/python3
  [ -x "$py" ] || py=python3
  rm -rf build-test-python/venv
  "$py" -m venv --system-site-packages build-test-python/venv
  MOE_BUILD_JOBS="$jobs" build-test-python/venv/bin/python -m pip install -q --no-build-isolation . || status=1
  (cd build-test-python && MOE_REQUIRE_TORCH=1 venv/bin/python -m pytest -q -p no:cacheprovider ../tests/python) || status=1
fi
exit $status
