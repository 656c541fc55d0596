// The extension module: one per instruction set (python/CMakeLists.txt names it _moe_<variant>).
// moe/__init__.py picks the best variant the CPU runs, reading the requirement marker below
// from the shared object's bytes before importing it (importing a module built for
// instructions the CPU lacks could fault in its static initialisers).
#include <string>
#include <exception>

#include "common.hpp"

#ifndef MOE_PY_MODULE
#error "MOE_PY_MODULE must name the module (python/CMakeLists.txt sets it)"
#endif

// The x86 features this translation unit was compiled for, as /proc/cpuinfo spells them
// (generated list; the loader checks each against the CPU's flags).
#if defined(__SSE3__)
#define MOE_PY_R00 " pni"
#else
#define MOE_PY_R00 ""
#endif
#if defined(__SSSE3__)
#define MOE_PY_R01 " ssse3"
#else
#define MOE_PY_R01 ""
#endif
#if defined(__SSE4_1__)
#define MOE_PY_R02 " sse4_1"
#else
#define MOE_PY_R02 ""
#endif
#if defined(__SSE4_2__)
#define MOE_PY_R03 " sse4_2"
#else
#define MOE_PY_R03 ""
#endif
#if defined(__POPCNT__)
#define MOE_PY_R04 " popcnt"
#else
#define MOE_PY_R04 ""
#endif
#if defined(__AVX__)
#define MOE_PY_R05 " avx"
#else
#define MOE_PY_R05 ""
#endif
#if defined(__AVX2__)
#define MOE_PY_R06 " avx2"
#else
#define MOE_PY_R06 ""
#endif
#if defined(__FMA__)
#define MOE_PY_R07 " fma"
#else
#define MOE_PY_R07 ""
#endif
#if defined(__F16C__)
#define MOE_PY_R08 " f16c"
#else
#define MOE_PY_R08 ""
#endif
#if defined(__BMI__)
#define MOE_PY_R09 " bmi1"
#else
#define MOE_PY_R09 ""
#endif
#if defined(__BMI2__)
#define MOE_PY_R10 " bmi2"
#else
#define MOE_PY_R10 ""
#endif
#if defined(__LZCNT__)
#define MOE_PY_R11 " abm"
#else
#define MOE_PY_R11 ""
#endif
#if defined(__MOVBE__)
#define MOE_PY_R12 " movbe"
#else
#define MOE_PY_R12 ""
#endif
#if defined(__AVX512F__)
#define MOE_PY_R13 " avx512f"
#else
#define MOE_PY_R13 ""
#endif
#if defined(__AVX512BW__)
#define MOE_PY_R14 " avx512bw"
#else
#define MOE_PY_R14 ""
#endif
#if defined(__AVX512DQ__)
#define MOE_PY_R15 " avx512dq"
#else
#define MOE_PY_R15 ""
#endif
#if defined(__AVX512VL__)
#define MOE_PY_R16 " avx512vl"
#else
#define MOE_PY_R16 ""
#endif
#if defined(__AVX512CD__)
#define MOE_PY_R17 " avx512cd"
#else
#define MOE_PY_R17 ""
#endif
#if defined(__AVX512VNNI__)
#define MOE_PY_R18 " avx512_vnni"
#else
#define MOE_PY_R18 ""
#endif
#if defined(__AVX512BF16__)
#define MOE_PY_R19 " avx512_bf16"
#else
#define MOE_PY_R19 ""
#endif
#if defined(__AVX512VBMI__)
#define MOE_PY_R20 " avx512vbmi"
#else
#define MOE_PY_R20 ""
#endif
#if defined(__AVX512VBMI2__)
#define MOE_PY_R21 " avx512_vbmi2"
#else
#define MOE_PY_R21 ""
#endif
#if defined(__AVX512IFMA__)
#define MOE_PY_R22 " avx512ifma"
#else
#define MOE_PY_R22 ""
#endif
#if defined(__AVX512BITALG__)
#define MOE_PY_R23 " avx512_bitalg"
#else
#define MOE_PY_R23 ""
#endif
#if defined(__AVX512VPOPCNTDQ__)
#define MOE_PY_R24 " avx512_vpopcntdq"
#else
#define MOE_PY_R24 ""
#endif
#if defined(__AVX512FP16__)
#define MOE_PY_R25 " avx512_fp16"
#else
#define MOE_PY_R25 ""
#endif
#if defined(__AVXVNNI__)
#define MOE_PY_R26 " avx_vnni"
#else
#define MOE_PY_R26 ""
#endif
#if defined(__GFNI__)
#define MOE_PY_R27 " gfni"
#else
#define MOE_PY_R27 ""
#endif
#if defined(__VAES__)
#define MOE_PY_R28 " vaes"
#else
#define MOE_PY_R28 ""
#endif
#if defined(__VPCLMULQDQ__)
#define MOE_PY_R29 " vpclmulqdq"
#else
#define MOE_PY_R29 ""
#endif

/// "MOE_PY_REQUIRES: f1 f2 ...;": kept in the binary for the loader to find by its bytes.
extern "C" __attribute__((used, visibility("default"))) const char moe_py_requires[] =
    "MOE_PY_REQUIRES:" MOE_PY_R00 MOE_PY_R01 MOE_PY_R02 MOE_PY_R03 MOE_PY_R04 MOE_PY_R05 MOE_PY_R06 MOE_PY_R07 MOE_PY_R08 MOE_PY_R09 MOE_PY_R10 MOE_PY_R11 MOE_PY_R12 MOE_PY_R13 MOE_PY_R14 MOE_PY_R15 MOE_PY_R16 MOE_PY_R17 MOE_PY_R18 MOE_PY_R19 MOE_PY_R20 MOE_PY_R21 MOE_PY_R22 MOE_PY_R23 MOE_PY_R24 MOE_PY_R25 MOE_PY_R26 MOE_PY_R27 MOE_PY_R28 MOE_PY_R29 ";";

PYBIND11_MODULE(MOE_PY_MODULE, m) {
    m.doc() = "moe's compiled core; use the moe package, which wraps it";
    std::string req(moe_py_requires + 16);
    req.pop_back();
    m.attr("required_features") = req;
    m.attr("arch") = moe::default_arch::name();
    m.attr("version") = std::to_string(MOE_VERSION_MAJOR) + "." + std::to_string(MOE_VERSION_MINOR) + "." +
                        std::to_string(MOE_VERSION_PATCH);  // the one version: moe/config.hpp
#if defined(_OPENMP)
    m.attr("openmp") = true;
#else
    m.attr("openmp") = false;
#endif

    // moe::error -> moe.Error (a ValueError) with .id; the class lives in Python so that every
    // variant raises the same type.
    static PyObject* error_type = py::object(py::module_::import("moe._errors").attr("Error")).release().ptr();
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const moe::error& e) {
            py::object exc = py::reinterpret_borrow<py::object>(error_type)(e.what(), e.id());
            PyErr_SetObject(error_type, exc.ptr());
        }
    });

    moe_py::bind_routing(m);
    moe_py::bind_selection(m);
    moe_py::bind_losses(m);
    moe_py::bind_layer(m);
    moe_py::bind_placement(m);
}
