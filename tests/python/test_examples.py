"""The Python examples run and print what they promise (small sizes)."""
import os
import subprocess
import sys

import pytest

from conftest import needs_torch

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "examples", "python")


def _run(name, *args):
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args], check=True, capture_output=True,
                          text=True).stdout


def test_compare_policies_example(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "p.png"
    out = _run("compare_policies.py", "--tokens", "512", "--experts", "8", "--plot", str(png))
    assert "dropless" in out and "megatron-probs-1.0" in out
    assert png.stat().st_size > 10000


@needs_torch
def test_train_router_example():
    out = _run("train_router.py", "--steps", "4", "--tokens", "256").splitlines()
    rows = [line.split() for line in out if line.strip()[:1].isdigit()]
    assert len(rows) == 4 and all(len(r) == 9 for r in rows)
