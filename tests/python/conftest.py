"""Shared fixtures of moe's Python tests: the committed goldens (tests/data), torch when present.

MOE_REQUIRE_TORCH=1 (the README's test command) turns a missing torch into a failure instead of
skipped torch tests."""
import os

import numpy as np
import pytest

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "data")


def data(*parts):
    return os.path.join(DATA, *parts)


def npy(*parts):
    return np.load(data(*parts))


def cases(folder):
    """(name, first words, {key: value}) per line of tests/data/<folder>/cases.txt."""
    out = []
    with open(data(folder, "cases.txt")) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            words = line.split()
            kv = dict(w.split("=", 1) for w in words if "=" in w)
            out.append((words[0], [w for w in words[1:] if "=" not in w], kv))
    return out


try:
    import torch  # noqa: F401
    HAVE_TORCH = True
except ImportError:  # pragma: no cover - Debian's python3-torch is in the test deps
    HAVE_TORCH = False
    if os.environ.get("MOE_REQUIRE_TORCH") == "1":
        raise

needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
