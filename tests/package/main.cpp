#include <cstdio>

#include <moe/io/safetensors.hpp>  // nlohmann/json comes with moe::moe
#include <moe/moe.hpp>

int main() {
    moe::matrix<float> logits(3, 8);
    for (std::size_t i = 0; i < logits.values.size(); ++i) logits.values[i] = static_cast<float>(i % 5);
    const auto r = moe::route(logits, moe::presets::mixtral());
    std::printf("consumer routed %zu tokens; token 0 -> experts %d, %d (moe %d.%d.%d)\n", r.num_tokens, r.index(0, 0),
                r.index(0, 1), MOE_VERSION_MAJOR, MOE_VERSION_MINOR, MOE_VERSION_PATCH);
    return r.index(0, 0) == 4 ? 0 : 1;
}
