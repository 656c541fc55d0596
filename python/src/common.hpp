// Shared helpers of moe's Python extension: arrays in and out, config dicts, the executor, and
// the Routing classes every binding file uses. The extension is compiled once per instruction
// set (python/CMakeLists.txt); every file of one variant sees the same flags.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <moe/moe.hpp>


namespace py = pybind11;

namespace moe_py {

/// The threads= argument: 1 runs on the calling thread; n > 1 on n OpenMP threads; 0 (the
/// default) on OpenMP's default team (all cores, or OMP_NUM_THREADS): the library's own
/// executor. One executor type, so each stage is instantiated once; results never depend on the
/// choice (moe's tiles are fixed).
#if defined(_OPENMP)
using py_executor = moe::openmp_executor;
#else
struct py_executor {  // a build without OpenMP: every threads= value runs serially
    int threads = 0;
    template <class F>
    void operator()(std::size_t n, F&& f) const {
        moe::serial_executor{}(n, f);
    }
};
#endif

inline py_executor executor(int threads) {
    if (threads < 0) MOE_THROW("moe.python.threads", "threads=", threads, " must be >= 0 (0 = all cores)");
    return py_executor{threads};
}

/// Element type names as numpy spells them, for messages.
inline std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

enum class elem { f32, f64, f16, bf16, i32, i64, u8, b1, other };

/// The element type of `a`; `bf16` marks a uint16 array that holds bfloat16 bits (a torch
/// bfloat16 tensor, which numpy has no dtype for).
inline elem kind_of(const py::array& a, bool bf16 = false) {
    const char k = a.dtype().kind();
    const auto n = a.itemsize();
    if (bf16) {
        if (k != 'u' || n != 2) MOE_THROW("moe.python.dtype", "bfloat16 data must come as uint16 bits, got ", dtype_name(a));
        return elem::bf16;
    }
    if (k == 'f' && n == 4) return elem::f32;
    if (k == 'f' && n == 8) return elem::f64;
    if (k == 'f' && n == 2) return elem::f16;
    if (k == 'i' && n == 4) return elem::i32;
    if (k == 'i' && n == 8) return elem::i64;
    if (k == 'u' && n == 1) return elem::u8;
    if (k == 'b') return elem::b1;
    return elem::other;
}

/// A 2-D input viewed as a row-major moe::matrix_view. Rows whose elements are contiguous are
/// read in place (any row stride: slices of a larger array); other layouts (Fortran order,
/// transposes, strided columns) are copied once into C order. `keep` owns what the view reads.
template <class T>
struct matrix_in {
    py::array keep;
    moe::matrix_view<const T> view;
};

template <class T>
matrix_in<T> matrix_of(const py::array& a, const char* what) {
    if (a.ndim() != 2) MOE_THROW("moe.python.shape", what, " must be 2-D, got ", a.ndim(), "-D");
    const auto isz = static_cast<py::ssize_t>(sizeof(T));
    if (a.itemsize() != isz) MOE_THROW("moe.python.dtype", what, ": internal element size mismatch");
    const std::size_t rows = static_cast<std::size_t>(a.shape(0)), cols = static_cast<std::size_t>(a.shape(1));
    const bool rows_ok = (a.strides(1) == isz || cols <= 1) && a.strides(0) >= 0 && a.strides(0) % isz == 0 &&
                         (rows <= 1 || static_cast<std::size_t>(a.strides(0) / isz) >= cols);
    matrix_in<T> m;
    if (rows_ok) {
        m.keep = a;
    } else {
        m.keep = py::array(a.dtype(), {a.shape(0), a.shape(1)});  // C order
        py::module_::import("numpy").attr("copyto")(m.keep, a);
    }
    const std::size_t stride = (rows_ok && rows > 1) ? static_cast<std::size_t>(m.keep.strides(0) / isz) : cols;
    m.view = moe::matrix_view<const T>(static_cast<const T*>(m.keep.data()), rows, cols, std::max<std::size_t>(stride, cols));
    return m;
}

/// A 1-D array of `n` values converted to std::vector<T> (any numeric dtype numpy can cast
/// without loss of kind: float to float, int to int).
template <class T>
std::vector<T> vector_of(const py::handle& h, const char* what, std::ptrdiff_t n = -1) {
    py::array a = py::array::ensure(h);
    if (!a) MOE_THROW("moe.python.dtype", what, " must be array-like");
    if (a.ndim() != 1) MOE_THROW("moe.python.shape", what, " must be 1-D, got ", a.ndim(), "-D");
    if (n >= 0 && a.shape(0) != n) MOE_THROW("moe.python.shape", what, " has ", a.shape(0), " values, expected ", n);
    const char k = a.dtype().kind();
    const bool want_float = std::is_floating_point<T>::value;
    if (want_float ? !(k == 'f' || k == 'i' || k == 'u') : !(k == 'i' || k == 'u' || k == 'b'))
        MOE_THROW("moe.python.dtype", what, " must be ", want_float ? "a float" : "an integer", " array, got ", dtype_name(a));
    py::array_t<T, py::array::c_style | py::array::forcecast> c(a);
    return std::vector<T>(c.data(), c.data() + c.size());
}

/// A 2-D integer array as int32 (any integer dtype; values outside int32 are refused).
struct int_matrix {
    std::vector<std::int32_t> values;
    std::size_t rows = 0, cols = 0;
    [[nodiscard]] moe::matrix_view<const std::int32_t> view() const { return {values.data(), rows, cols}; }
};
inline int_matrix int_matrix_of(const py::handle& h, const char* what) {
    py::array a = py::array::ensure(h);
    if (!a) MOE_THROW("moe.python.dtype", what, " must be array-like");
    if (a.ndim() != 2) MOE_THROW("moe.python.shape", what, " must be 2-D [T, k], got ", a.ndim(), "-D");
    const char k = a.dtype().kind();
    if (k != 'i' && k != 'u') MOE_THROW("moe.python.dtype", what, " must be an integer array, got ", dtype_name(a));
    py::array_t<std::int64_t, py::array::c_style | py::array::forcecast> c(a);
    int_matrix m;
    m.rows = static_cast<std::size_t>(a.shape(0));
    m.cols = static_cast<std::size_t>(a.shape(1));
    m.values.resize(m.rows * m.cols);
    for (std::size_t i = 0; i < m.values.size(); ++i) {
        const std::int64_t v = c.data()[i];
        // Out-of-range values become an index the replay check names (it refuses anything < -1).
        m.values[i] = v < -2 ? -2 : v > 0x7fffffff ? 0x7fffffff : static_cast<std::int32_t>(v);
    }
    return m;
}

/// std::vector -> numpy array that owns the vector's memory (no copy).
template <class T>
py::array to_array(std::vector<T>&& v, std::vector<py::ssize_t> shape) {
    auto* heap = new std::vector<T>(std::move(v));
    py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<T>*>(p); });
    return py::array_t<T>(shape, heap->data(), owner);
}
template <class T>
py::array to_array(std::vector<T>&& v) {
    const auto n = static_cast<py::ssize_t>(v.size());
    return to_array(std::move(v), {n});
}
/// size_t counts as int64 (numpy's default integer).
inline py::array counts_array(const std::vector<std::size_t>& v) {
    return to_array(std::vector<std::int64_t>(v.begin(), v.end()));
}
template <class T>
py::array matrix_array(moe::matrix<T>&& m) {
    const auto r = static_cast<py::ssize_t>(m.rows), c = static_cast<py::ssize_t>(m.cols);
    return to_array(std::move(m.values), {r, c});
}

/// Config dicts: keyword arguments of the Python layer, read field by field. Unknown keys are
/// errors (a typo never passes silently).
struct dict_reader {
    py::dict d;
    const char* what;
    std::vector<std::string> seen;

    bool has(const char* key) {
        seen.emplace_back(key);
        return d.contains(key) && !d[key].is_none();
    }
    template <class T>
    void get(const char* key, T& out) {
        if (!has(key)) return;
        try {
            out = d[key].cast<T>();
        } catch (const py::cast_error&) {
            MOE_THROW("moe.python.argument", what, ": ", key, "=", py::repr(d[key]).cast<std::string>(), " has the wrong type");
        }
    }
    void get_size(const char* key, std::size_t& out) {
        if (!has(key)) return;
        long long v = 0;
        get(key, v);
        if (v < 0) MOE_THROW("moe.python.argument", what, ": ", key, "=", v, " must be >= 0");
        out = static_cast<std::size_t>(v);
    }
    template <class E, class Parse>
    void get_enum(const char* key, E& out, Parse parse) {
        if (!has(key)) return;
        out = parse(py::str(d[key]).cast<std::string>());
    }
    /// Throws for keys no get() asked for.
    void finish() const {
        for (auto item : d) {
            const std::string k = py::str(item.first).cast<std::string>();
            if (std::find(seen.begin(), seen.end(), k) == seen.end())
                MOE_THROW("moe.python.argument", what, ": unknown option '", k, "'");
        }
    }
};

moe::group_mask parse_mask(const std::string& s);
/// router_config from {"preset": name, field: value, ...}; fields override the preset.
moe::router_config router_config_of(const py::dict& d);
py::dict dict_of(const moe::router_config& c);
moe::drop_config drop_config_of(const py::dict& d);
moe::capacity_config capacity_config_of(const py::dict& d);

/// A routing held by Python: float32 weights (float, half, bfloat16 logits) or float64 (double
/// logits). Its arrays are views of the C++ vectors, writable, alive as long as the object.
template <class W>
struct py_routing {
    moe::routing<W> r;
};

template <class W>
py::array view_of(std::vector<W>& v, std::vector<py::ssize_t> shape, py::handle base) {
    return py::array_t<W>(shape, v.data(), base);
}

/// The routing inside a RoutingF32 / RoutingF64 object; calls f(moe::routing<W>&).
template <class F>
decltype(auto) visit_routing(py::handle obj, F&& f) {
    if (py::isinstance<py_routing<float>>(obj)) return f(obj.cast<py_routing<float>&>().r);
    if (py::isinstance<py_routing<double>>(obj)) return f(obj.cast<py_routing<double>&>().r);
    MOE_THROW("moe.python.argument", "expected a moe.Routing, got ", py::str(py::type::of(obj)).cast<std::string>());
}

template <class W>
py::object wrap(moe::routing<W>&& r) {
    return py::cast(py_routing<W>{std::move(r)});
}

/// Float-typed logits: calls f(matrix_view<const T>) for T = float, double, Eigen::half or
/// Eigen::bfloat16; other dtypes are errors naming `what`.
template <class F>
decltype(auto) visit_logits(const py::array& a, bool bf16, const char* what, F&& f) {
    switch (kind_of(a, bf16)) {
        case elem::f32: return f(matrix_of<float>(a, what));
        case elem::f64: return f(matrix_of<double>(a, what));
        case elem::f16: return f(matrix_of<Eigen::half>(a, what));
        case elem::bf16: return f(matrix_of<Eigen::bfloat16>(a, what));
        default:
            MOE_THROW("moe.python.dtype", what, " must be float32, float64, float16 or bfloat16, got ", dtype_name(a));
    }
}

/// Loss inputs: float32 or float64 only (the gradient comes back in the same type).
template <class F>
decltype(auto) visit_loss_logits(const py::array& a, const char* what, F&& f) {
    switch (kind_of(a)) {
        case elem::f32: return f(matrix_of<float>(a, what));
        case elem::f64: return f(matrix_of<double>(a, what));
        default: MOE_THROW("moe.python.dtype", what, " must be float32 or float64, got ", dtype_name(a));
    }
}

/// Optional token mask (1 = real token) as the uint8 vector moe's losses take.
std::vector<std::uint8_t> mask_of(const py::object& valid, std::size_t tokens);

void bind_routing(py::module_& m);
void bind_selection(py::module_& m);
void bind_losses(py::module_& m);
void bind_layer(py::module_& m);
void bind_placement(py::module_& m);

}  // namespace moe_py
