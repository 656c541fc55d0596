// Argument helpers shared by the example tools (mixtral-layer, moe-layer): every bad value
// ends with "<tool>: [id] message" on stderr and exit status 2. Define MOE_CLI_TOOL (the
// tool's name, a string literal) before including.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#ifndef MOE_CLI_TOOL
#error "define MOE_CLI_TOOL before including cli_args.hpp"
#endif

namespace {

[[noreturn]] void fail(const std::string& id, const std::string& msg) {
    std::fprintf(stderr, MOE_CLI_TOOL ": [%s] %s\n", id.c_str(), msg.c_str());
    std::exit(2);
}

std::size_t to_size(const std::string& opt, const std::string& v) {
    char* end = nullptr;
    const unsigned long long x = std::strtoull(v.c_str(), &end, 10);
    if (v.empty() || v[0] == '-' || end != v.c_str() + v.size()) fail("moe.cli.value", opt + " expects a non-negative integer, got '" + v + "'");
    return static_cast<std::size_t>(x);
}

double to_double(const std::string& opt, const std::string& v) {
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || end != v.c_str() + v.size() || !std::isfinite(x)) fail("moe.cli.value", opt + " expects a number, got '" + v + "'");
    return x;
}

}  // namespace
