/// @file moe.hpp
/// Umbrella header: everything moe offers.
#pragma once

#include "arch.hpp"
#include "config.hpp"
#include "executor.hpp"
#include "gate.hpp"
#include "io/npy.hpp"
#include "presets.hpp"
#include "router.hpp"
#include "scoring.hpp"
#include "tensor.hpp"
