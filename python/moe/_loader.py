"""Picks the compiled variant of moe's core that this CPU runs.

The extension is built once per instruction set (baseline x86-64, AVX2, the build machine's
native set). Each module carries the marker ``MOE_PY_REQUIRES:<cpuinfo flags>;`` in its bytes;
the loader reads it *without importing* (a module built for instructions the CPU lacks could
fault while loading) and imports the most capable variant whose flags the CPU has.
``MOE_VARIANT=baseline|avx2|native`` forces one.
"""
import glob
import importlib
import os
import sys

from ._errors import fail

ORDER = ("native", "avx2", "baseline")
_HERE = os.path.dirname(os.path.abspath(__file__))


def built_variants() -> dict:
    """{variant: path of its shared object} for the variants present next to this file."""
    out = {}
    for v in ORDER:
        hits = sorted(glob.glob(os.path.join(_HERE, f"_moe_{v}.*so"))) + sorted(glob.glob(os.path.join(_HERE, f"_moe_{v}.*pyd")))
        if hits:
            out[v] = hits[0]
    return out


def required_features(path: str) -> list:
    """The CPU flags a variant needs, read from its marker."""
    with open(path, "rb") as f:
        data = f.read()
    i = data.find(b"MOE_PY_REQUIRES:")
    j = data.find(b";", i)
    if i < 0 or j < 0:
        raise ImportError(f"moe: {path} carries no MOE_PY_REQUIRES marker")
    return data[i + 16 : j].decode("ascii").split()


def cpu_flags():
    """The CPU's flags from /proc/cpuinfo, or None where there is none (then only the baseline loads)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


# Flags a listed flag implies: every CPU with AVX2 (Intel Haswell on, AMD Excavator on) has
# LZCNT, the kernel's "abm"; some hypervisors hide that flag (seen on a KVM Zen 5 guest), which
# would leave such a machine on the baseline variant.
IMPLIED = {"avx2": ("abm",)}


def runs_here(required, flags) -> bool:
    """Whether a CPU with these /proc/cpuinfo flags has every required one (or one implied)."""
    have = set(flags)
    for f, implied in IMPLIED.items():
        if f in have:
            have.update(implied)
    return set(required) <= have


def choose(variants: dict, flags, forced=None) -> str:
    if forced:
        if forced not in variants:
            raise fail("moe.python.variant", f"MOE_VARIANT={forced} was not built (built: {', '.join(variants) or 'none'})")
        return forced
    for v in ORDER:
        if v not in variants:
            continue
        if v == "baseline" or (flags is not None and runs_here(required_features(variants[v]), flags)):
            return v
    raise ImportError("moe: no compiled variant of the extension runs on this CPU (built: " + ", ".join(variants) + ")")


def load():
    variants = built_variants()
    if not variants:
        raise ImportError(f"moe: the compiled extension is missing from {_HERE}; build it with "
                          "`python3 -m pip install --no-build-isolation .` or cmake -DMOE_BUILD_PYTHON=ON")
    v = choose(variants, cpu_flags(), os.environ.get("MOE_VARIANT") or None)
    mod = importlib.import_module(f"moe._moe_{v}")
    sys.modules["moe._native"] = mod
    return v, mod
