# Finds moe's dependencies (Debian 12 packages) and fails with the exact install line.
set(MOE_APT_CORE "libeigen3-dev libxsimd-dev xtl-dev nlohmann-json3-dev")

function(moe_require found package what)
  if(NOT ${found})
    message(FATAL_ERROR "moe: ${what} not found. On Debian 12 install it with:\n"
                        "  apt-get install -y ${package}")
  endif()
endfunction()

macro(moe_find_core_dependencies)
  find_package(Eigen3 3.4 QUIET NO_MODULE)
  moe_require(Eigen3_FOUND libeigen3-dev "Eigen 3.4")
  find_package(xtl QUIET)        # xsimd 8.1's config needs xtl first
  moe_require(xtl_FOUND xtl-dev "xtl")
  find_package(xsimd 8 QUIET)
  moe_require(xsimd_FOUND libxsimd-dev "xsimd 8")
  find_package(nlohmann_json 3 QUIET)  # checkpoint readers (moe/io/safetensors.hpp)
  moe_require(nlohmann_json_FOUND nlohmann-json3-dev "nlohmann/json 3")
endmacro()
