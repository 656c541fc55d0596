/// @file selection.hpp
/// Deprecated name, kept for one release (removed in 0.2): this header moved to moe/route_policies.hpp.
#pragma once

#include "route_policies.hpp"
