/// @file trace.hpp
/// Deprecated name, kept for one release (removed in 0.2): this header moved to moe/analysis/trace.hpp.
#pragma once

#include "analysis/trace.hpp"
