#!/usr/bin/env bash
# Installs the Debian 12 packages moe needs for a purpose: core | demo | test | python.
# Skips apt entirely when everything is already installed.
set -euo pipefail
purpose=${1:-test}
core="cmake ninja-build g++ libeigen3-dev libxsimd-dev xtl-dev nlohmann-json3-dev"
case "$purpose" in
  core) pkgs="$core" ;;
  demo) pkgs="$core python3-matplotlib" ;;  # the policy plot
  test) pkgs="$core clang libclang-rt-14-dev catch2 libbenchmark-dev libopenmpi-dev openmpi-bin libglpk-dev" ;;  # rt: sanitizer and fuzzer runtimes (only a Recommends of clang)
  # python: the extension (pybind11), `pip install --no-build-isolation .` in a venv, pytest, torch
  python) pkgs="$core python3-dev pybind11-dev python3-pybind11 python3-numpy python3-pytest python3-setuptools python3-pip python3-venv python3-torch python3-matplotlib" ;;
  *) echo "usage: $0 core|demo|test|python" >&2; exit 2 ;;
esac
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "moe: installing$missing"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends $missing
fi
