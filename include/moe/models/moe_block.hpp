/// @file models/moe_block.hpp
/// Forwarding header (removal in 0.2): `moe::models::moe_block`, `block_spec`, `block_weights`
/// and `shared_gate` now live in block.hpp (`moe::block`); include block.hpp.
#pragma once

#include "../block.hpp"
