/// @file simulator.hpp
/// Deprecated name, kept for one release (removed in 0.2): this header moved to moe/analysis/policy_compare.hpp.
#pragma once

#include "analysis/policy_compare.hpp"
