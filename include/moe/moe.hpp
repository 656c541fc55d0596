/// @file moe.hpp
/// Umbrella header: every public header that needs no optional dependency. Two stay separate
/// because they need a library of their own: `moe/mpi/expert_parallel.hpp` (MPI; CMake target
/// moe::mpi) and `moe/placement_ilp.hpp` (GLPK; moe::glpk).
#pragma once

// The flow, bottom up (docs/architecture.md): values, routing, selection, layers, files, analysis.
#include "arch.hpp"
#include "config.hpp"
#include "executor.hpp"
#include "rng.hpp"
#include "tensor.hpp"
#include "routing.hpp"
#include "scoring.hpp"
#include "gate.hpp"
#include "router.hpp"
#include "presets.hpp"
#include "noise.hpp"
#include "route_policies.hpp"
#include "replay.hpp"
#include "expert_reduction.hpp"
#include "capacity.hpp"
#include "dispatch.hpp"
#include "losses.hpp"
#include "metrics.hpp"

#include "kernels/expert_ffn.hpp"
#include "kernels/formats.hpp"
#include "kernels/pack.hpp"
#include "kernels/quant_ffn.hpp"
#include "block.hpp"

#include "io/gguf.hpp"
#include "io/mapped_file.hpp"
#include "io/npy.hpp"
#include "io/safetensors.hpp"
#include "models/checkpoint.hpp"
#include "models/gguf.hpp"
#include "models/hf.hpp"

#include "placement.hpp"
#include "analysis/machine.hpp"
#include "analysis/offload.hpp"
#include "analysis/policy_compare.hpp"
#include "analysis/record.hpp"
#include "analysis/stats.hpp"
#include "analysis/synthetic.hpp"
#include "analysis/trace.hpp"
