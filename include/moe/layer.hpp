/// @file layer.hpp
/// Forwarding header (removal in 0.2): `moe::sparse_moe_block` is an alias of `moe::block`;
/// include block.hpp.
#pragma once

#include "block.hpp"
