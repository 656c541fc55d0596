/// @file offload.hpp
/// Deprecated name, kept for one release (removed in 0.2): this header moved to moe/analysis/offload.hpp.
#pragma once

#include "analysis/offload.hpp"
