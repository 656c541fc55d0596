#!/usr/bin/env bash
# The README's test command: installs what it needs, then builds and runs every test in two
# configurations: g++ / C++17 and clang++ / C++20 (both Release, warnings as errors).
set -euo pipefail
cd "$(dirname "$0")/.."
bash cmake/deps.sh test
jobs=$(nproc 2>/dev/null || echo 2)
status=0
for config in "gcc g++ 17" "clang clang++ 20"; do
  set -- $config
  dir="build-test-$1"
  echo "== $2, C++$3 ($dir)"
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$2" \
    -DMOE_TEST_CXX_STANDARD="$3" -DMOE_WERROR=ON > /dev/null
  cmake --build "$dir" -j "$jobs"
  (cd "$dir" && ctest -j "$jobs" --output-on-failure --timeout 600) || status=1
done
exit $status
