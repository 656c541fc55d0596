"""Builds moe's Python extension with CMake (python/CMakeLists.txt) into the package.

`python3 -m pip install --no-build-isolation .` runs this through setuptools' PEP 517
backend. Environment: MOE_PYTHON_VARIANTS="baseline;avx2;native" (default on x86-64) picks the
instruction-set variants; MOE_BUILD_JOBS the parallel jobs; MOE_BUILD_TYPE (Release); CMAKE_ARGS
further CMake arguments, split as a shell would (as scikit-build and conda's builds take them).
"""
import os
import shlex
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


def _version():
    """MOE_VERSION_MAJOR.MINOR.PATCH from include/moe/config.hpp, the one place it is written."""
    import re
    with open(os.path.join(ROOT, "include", "moe", "config.hpp")) as f:
        parts = dict(re.findall(r"^#define MOE_VERSION_(MAJOR|MINOR|PATCH) ([0-9]+)$", f.read(), re.M))
    return f"{parts['MAJOR']}.{parts['MINOR']}.{parts['PATCH']}"


class CMakeBuild(build_ext):
    def run(self):
        out = os.path.join(os.path.abspath(self.build_lib), "moe")
        tmp = os.path.abspath(os.path.join(self.build_temp, "cmake"))
        os.makedirs(out, exist_ok=True)
        os.makedirs(tmp, exist_ok=True)
        args = [
            "cmake", "-S", ROOT, "-B", tmp,
            f"-DCMAKE_BUILD_TYPE={os.environ.get('MOE_BUILD_TYPE', 'Release')}",
            "-DMOE_BUILD_PYTHON=ON", "-DMOE_BUILD_TESTS=OFF", "-DMOE_BUILD_BENCHMARKS=OFF",
            "-DMOE_BUILD_EXAMPLES=OFF", "-DMOE_INSTALL=OFF",
            f"-DMOE_PY_OUTPUT_DIR={out}", f"-DPython3_EXECUTABLE={sys.executable}",
        ]
        if os.environ.get("MOE_PYTHON_VARIANTS"):
            args.append(f"-DMOE_PYTHON_VARIANTS={os.environ['MOE_PYTHON_VARIANTS']}")
        args += shlex.split(os.environ.get("CMAKE_ARGS", ""))
        if _has("ninja"):
            args += ["-G", "Ninja"]
        subprocess.check_call(args)
        jobs = os.environ.get("MOE_BUILD_JOBS") or str(os.cpu_count() or 2)
        subprocess.check_call(["cmake", "--build", tmp, "-j", jobs])
        if self.inplace:  # editable installs: modules next to the sources
            src = os.path.join(ROOT, "python", "moe")
            for f in os.listdir(out):
                if f.startswith("_moe_"):
                    self.copy_file(os.path.join(out, f), os.path.join(src, f))


def _has(prog):
    return any(os.access(os.path.join(p, prog), os.X_OK) for p in os.environ.get("PATH", "").split(os.pathsep))


# One placeholder extension marks the wheel as platform-specific; CMake builds the real modules.
setup(version=_version(), ext_modules=[Extension("moe._moe_baseline", sources=[])], cmdclass={"build_ext": CMakeBuild})
