#!/usr/bin/env bash
# The README's demo: builds the moe-route tool and routes synthetic, skewed logits.
set -euo pipefail
cd "$(dirname "$0")/.."
bash cmake/deps.sh demo
cmake -S . -B build-demo -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DMOE_BUILD_TESTS=OFF -DMOE_BUILD_BENCHMARKS=OFF -DMOE_BUILD_EXAMPLES=ON > /dev/null
cmake --build build-demo --target moe-route
echo
echo "== Mixtral routing (softmax, top-2, renormalised) of 4096 tokens, 8 experts, Zipf-skewed popularity"
./build-demo/examples/moe-route --synthetic 4096,8 --skew zipf:1.2 --seed 7 --preset mixtral
echo
echo "== DeepSeek-V3 routing (sigmoid, 8 groups / top-4, top-8, x2.5) of 4096 tokens, 256 experts"
./build-demo/examples/moe-route --synthetic 4096,256 --skew dirichlet:0.3 --seed 7 --preset deepseek_v3
echo
echo "== The same Mixtral routing under DeepSpeed's capacity (factor 1.25, slot-major drops), blocks of 128"
./build-demo/examples/moe-route --synthetic 4096,8 --skew zipf:1.2 --seed 7 --preset mixtral \
  --capacity-factor 1.25 --capacity-formula deepspeed --drop-policy slot_major --block-size 128
