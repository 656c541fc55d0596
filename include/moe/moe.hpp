/// @file moe.hpp
/// Umbrella header: everything moe offers.
#pragma once

#include "arch.hpp"
#include "capacity.hpp"
#include "config.hpp"
#include "dispatch.hpp"
#include "executor.hpp"
#include "gate.hpp"
#include "io/npy.hpp"
#include "losses.hpp"
#include "metrics.hpp"
#include "noise.hpp"
#include "offload.hpp"
#include "placement.hpp"
#include "presets.hpp"
#include "router.hpp"
#include "scoring.hpp"
#include "selection.hpp"
#include "tensor.hpp"
#include "trace.hpp"
