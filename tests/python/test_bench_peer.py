"""bench/peer_torch_mixtral.py, the PyTorch peer of bench_experts: it runs, its HF loop agrees
with its dense float64 statement (it exits non-zero otherwise), and it writes one row per case."""
import json
import os
import subprocess
import sys

from conftest import needs_torch

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "bench", "peer_torch_mixtral.py")


@needs_torch
def test_peer_script_runs_and_checks_itself(tmp_path):
    out = tmp_path / "peer.json"
    for dtype in ("bf16", "f32"):
        r = subprocess.run([sys.executable, SCRIPT, "--shape", "tiny", "--tokens", "1,8,64", "--threads", "1", "--repeats", "2",
                            "--rotation-mib", "1", "--dtype", dtype, "--json", str(out)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert "dense check: relative L2" in r.stdout
        rows = json.loads(out.read_text())["rows"]
        assert [(row["T"], row["threads"], row["dtype"]) for row in rows] == [(1, 1, dtype), (8, 1, dtype), (64, 1, dtype)]
        assert all(row["ms"] > 0 for row in rows)
