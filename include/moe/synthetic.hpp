/// @file synthetic.hpp
/// Deprecated name, kept for one release (removed in 0.2): this header moved to moe/analysis/synthetic.hpp.
#pragma once

#include "analysis/synthetic.hpp"
