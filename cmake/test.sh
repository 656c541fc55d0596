#!/usr/bin/env bash
# The README's test command: installs what it needs, then builds and runs every test in three
# configurations: g++ / C++17 Release, clang++ / C++20 Release (warnings as errors), and
# clang++ / C++17 Debug under AddressSanitizer + UndefinedBehaviorSanitizer, which also runs the
# libFuzzer harness for 120 s from the committed seed corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
bash cmake/deps.sh test
jobs=$(nproc 2>/dev/null || echo 2)
status=0
for config in "gcc g++ 17 Release OFF" "clang clang++ 20 Release OFF" "asan clang++ 17 Debug ON"; do
  set -- $config
  dir="build-test-$1"
  echo "== $2, C++$3, $4, sanitizers $5 ($dir)"
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$4" -DCMAKE_CXX_COMPILER="$2" \
    -DMOE_TEST_CXX_STANDARD="$3" -DMOE_WERROR=ON -DMOE_SANITIZE="$5" -DMOE_BUILD_FUZZERS="$5" \
    -DMOE_BUILD_BENCHMARKS="$([ "$5" = ON ] && echo OFF || echo ON)" > /dev/null
  cmake --build "$dir" -j "$jobs"
  (cd "$dir" && ctest -j "$jobs" --output-on-failure --timeout 600) || status=1
done
exit $status
