#!/usr/bin/env bash
# The README's demo: a toy Mixtral-style MoE layer end to end (dropless, then with
# capacity-aware reroute, then with Q4_K experts), and the routing-policy comparison with its plot.
set -euo pipefail
cd "$(dirname "$0")/.."
bash cmake/deps.sh demo
cmake -S . -B build-demo -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DMOE_BUILD_TESTS=OFF -DMOE_BUILD_BENCHMARKS=OFF -DMOE_BUILD_EXAMPLES=ON > /dev/null
cmake --build build-demo --target moe-route mixtral-layer
echo
echo "== A Mixtral-style sparse MoE block (H 1024, F 3584, 8 experts, top-2), 512 tokens, dropless"
./build-demo/examples/mixtral-layer --tokens 512 --repeat 3
echo
echo "== The same block with capacity-aware inference: capacity factor 1.0, overflow rerouted"
./build-demo/examples/mixtral-layer --tokens 512 --repeat 3 --capacity-factor 1.0 --reroute
echo
echo "== The same block with GGUF Q4_K experts (quantized by the reference quantizer), 512 tokens and 1 token"
./build-demo/examples/mixtral-layer --tokens 512 --repeat 3 --dtype q4_k
./build-demo/examples/mixtral-layer --tokens 1 --repeat 20 --dtype q4_k
echo
echo "== Routing policies side by side on the same Zipf-skewed logits (8192 tokens, 16 experts, top-2)"
./build-demo/examples/moe-route --synthetic 8192,16 --skew zipf:1.2 --seed 7 --compare \
  --csv build-demo/policies.csv --plot build-demo/policies.png
echo
echo "== DeepSeek-V3 routing (sigmoid, 8 groups / top-4, top-8, x2.5) of 4096 tokens, 256 experts"
./build-demo/examples/moe-route --synthetic 4096,256 --skew dirichlet:0.3 --seed 7 --preset deepseek_v3
