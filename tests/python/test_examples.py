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


def test_plot_trace_draws_the_load_heat_map(tmp_path):
    # moe-route --trace ... --plot writes these three CSVs; with LOADS.csv the figure gains a
    # third panel (the per-layer load heat map), which widens the PNG from 13 to 19 inches.
    pytest.importorskip("matplotlib")
    import struct
    (tmp_path / "c.csv").write_text("policy,m,hit_rate\nlru,4,0.5\nlru,8,0.75\n")
    (tmp_path / "d.csv").write_text('placement,device,load\n"contiguous",0,10\n"contiguous",1,6\n')
    (tmp_path / "l.csv").write_text("layer,expert,load\n" + "".join(f"{l},{e},{(l + 1) * (e + 1)}\n" for l in range(3) for e in range(8)))
    script = os.path.join(EXAMPLES, os.pardir, "plot_trace.py")

    def width(png):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        return struct.unpack(">I", data[16:20])[0]

    subprocess.run([sys.executable, script, str(tmp_path / "c.csv"), str(tmp_path / "d.csv"), str(tmp_path / "two.png")], check=True)
    subprocess.run([sys.executable, script, str(tmp_path / "c.csv"), str(tmp_path / "d.csv"), str(tmp_path / "three.png"),
                    str(tmp_path / "l.csv")], check=True)
    assert width(tmp_path / "two.png") == 13 * 110
    assert width(tmp_path / "three.png") == 19 * 110
