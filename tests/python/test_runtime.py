"""The runtime side: threads, the GIL, the instruction-set variants and their loader."""
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import moe
from moe import _loader
from conftest import data, npy


def test_results_do_not_depend_on_threads():
    logits = moe.synthetic_logits(3000, 64, skew="zipf:1", seed=4)
    bias = np.linspace(-0.1, 0.1, 64).astype(np.float32)
    one = moe.route(logits, "deepseek_v3", bias=bias, threads=1)
    for n in (0, 2, 5):
        r = moe.route(logits, "deepseek_v3", bias=bias, threads=n)
        np.testing.assert_array_equal(r.indices, one.indices)
        np.testing.assert_array_equal(r.weights, one.weights)
    x = np.random.default_rng(0).standard_normal((300, 64)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((16, 64)).astype(np.float32)
    np.testing.assert_array_equal(moe.gate(x, w, threads=1), moe.gate(x, w, threads=4))


def test_gil_is_released_during_compute():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6000, 1024)).astype(np.float32)
    w = rng.standard_normal((256, 1024)).astype(np.float32)
    window = {}

    def work():
        window["start"] = time.perf_counter()
        moe.gate(x, w, threads=1)
        window["end"] = time.perf_counter()

    ticks = []
    th = threading.Thread(target=work)
    th.start()
    while th.is_alive():
        ticks.append(time.perf_counter())
    th.join()
    start, end = window["start"], window["end"]
    assert end - start > 0.02, "the call is too short to tell"
    inside = sum(1 for t in ticks if start + 0.005 < t < end - 0.005)
    # With the GIL held by the call, this thread could not run at all inside the window.
    assert inside > 1000, (inside, end - start)


SCRIPT = textwrap.dedent("""
    import sys, numpy as np, moe
    sys.path.insert(0, sys.argv[2])
    from conftest import data, npy
    out = {"variant": np.array(moe.variant)}
    logits = moe.synthetic_logits(500, 64, skew="zipf:1", seed=9)
    for p in ("mixtral", "deepseek_v3", "qwen3_moe", "gpt_oss", "llama4"):
        r = moe.route(logits, p)
        out[p + ".i"], out[p + ".w"] = r.indices, r.weights
    for groups, m in ((64, 1), (16, 2), (8, 0)):  # groups of one expert (issue 29), of four, of eight
        r = moe.route(logits, score="sigmoid", top_k=4, num_groups=groups, group_top_k=4, group_score_top_m=m)
        out[f"groups{groups}.i"], out[f"groups{groups}.w"] = r.indices, r.weights
    r = moe.route(logits, "mixtral")
    # Losses: value and gradient (scalar double / float code that FMA targets could contract).
    for name, (v, g) in {
        "lbl": moe.load_balancing_loss(logits, r, grad=True),
        "lbl_hf": moe.load_balancing_loss(logits, r, normalization="hf_mixtral", grad=True),
        "lbl_sigmoid": moe.load_balancing_loss(logits, top_k=4, score="sigmoid", grad=True),
        "lbl_sqrtsoftplus": moe.load_balancing_loss(logits, top_k=4, score="sqrtsoftplus", grad=True),
        "seq_lbl": moe.sequence_load_balancing_loss(logits, r, seq_len=100, grad=True),
        "z": moe.z_loss(logits, grad=True),
        "importance": moe.importance_load_loss(logits, moe.add_normal_noise(logits, 0.5, seed=3), r, gate_noise=0.5,
                                               grad=True),
    }.items():
        out[name], out[name + ".grad"] = np.array(v), g
    # Noise and samplers (Dirichlet draws Gamma variates).
    out["jitter"] = moe.apply_jitter(logits, 0.01, seed=5)
    out["gumbel"] = moe.add_gumbel_noise(logits, seed=6)
    out["normal"] = moe.add_normal_noise(logits, 0.3, seed=7)
    out["dirichlet"] = moe.synthetic_logits(200, 64, skew="dirichlet:0.3", seed=8)
    for m in ("mixtral", "qwen2_moe", "deepseek_v3", "gpt_oss", "llama4"):
        spec, weights = moe.load_block(data("models", m), 1)
        out[m] = moe.MoeBlock(spec, weights).forward(npy("models", m, "x.npy"))
    np.savez(sys.argv[1], **out)
""")


def test_every_built_variant_gives_the_same_bits(tmp_path):
    """Routing, losses and blocks: the same bits on every instruction set (SSE2 runs moe's scalar
    reference, which rounds like the FMA paths)."""
    built = _loader.built_variants()
    runnable = [v for v in built if v == "baseline" or _loader.runs_here(_loader.required_features(built[v]), _loader.cpu_flags() or set())]
    results = {}
    for v in runnable:
        f = tmp_path / f"{v}.npz"
        env = dict(os.environ, MOE_VARIANT=v)
        subprocess.run([sys.executable, "-c", SCRIPT, str(f), os.path.dirname(os.path.abspath(__file__))], check=True, env=env)
        results[v] = np.load(f)
        assert str(results[v]["variant"]) == v
    if len(results) < 2:
        pytest.skip(f"one variant runs here ({', '.join(results)})")
    base = results[runnable[-1]]
    # Every differing result, not only the first: one contracted line usually shows in several.
    differ = [f"{v} vs {runnable[-1]}: {k}" for v in runnable[:-1] for k in base.files
              if k != "variant" and not np.array_equal(results[v][k], base[k])]
    assert not differ, "\n".join(differ)


def test_loader_picks_the_best_variant_the_cpu_runs(tmp_path):
    def fake(name, req):
        p = tmp_path / f"_moe_{name}.so"
        p.write_bytes(b"\x7fELF....MOE_PY_REQUIRES:" + req.encode() + b";....")
        return str(p)

    variants = {"native": fake("native", " avx2 avx512f avx512bw"), "avx2": fake("avx2", " avx2 fma"),
                "baseline": fake("baseline", "")}
    assert _loader.choose(variants, {"avx2", "fma", "avx512f", "avx512bw"}) == "native"
    assert _loader.choose(variants, {"avx2", "fma"}) == "avx2"
    assert _loader.choose(variants, {"sse2"}) == "baseline"
    assert _loader.choose(variants, None) == "baseline"  # no /proc/cpuinfo: the safe one
    # LZCNT ("abm") comes with AVX2; a guest whose kernel hides the flag still runs x86-64-v3.
    v3 = {"avx2": fake("avx2", " avx2 fma abm"), "baseline": variants["baseline"]}
    assert _loader.choose(v3, {"avx2", "fma"}) == "avx2"
    assert _loader.choose(v3, {"fma", "abm"}) == "baseline"
    assert not _loader.runs_here(["abm"], {"sse2"})
    assert _loader.choose(variants, set(), forced="avx2") == "avx2"
    with pytest.raises(moe.Error) as e:
        _loader.choose({"baseline": variants["baseline"]}, set(), forced="native")
    assert str(e.value) == "[moe.python.variant] MOE_VARIANT=native was not built (built: baseline)"


def test_the_loaded_variant_runs_here():
    built = _loader.built_variants()
    assert moe.variant in built
    req = set(_loader.required_features(built[moe.variant]))
    flags = _loader.cpu_flags()
    assert flags is None or _loader.runs_here(req, flags)
    assert set(moe._core.required_features.split()) == req  # the marker is what the module was built with


def test_version_is_the_one_written_in_config_hpp():
    import re
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "include", "moe", "config.hpp")) as f:
        parts = dict(re.findall(r"^#define MOE_VERSION_(MAJOR|MINOR|PATCH) ([0-9]+)$", f.read(), re.M))
    assert moe.__version__ == f"{parts['MAJOR']}.{parts['MINOR']}.{parts['PATCH']}"


def test_router_config_fields_are_written_once():
    """The C++ field table drives RouterConfig, the dicts, route()'s keywords and the stub."""
    import inspect
    import re
    fields = moe.router_config_fields
    assert fields[:2] == ["score", "top_k"] and len(fields) == len(set(fields))
    call_args = ("logits", "preset", "bias", "threads", "replay", "replay_weights", "ser")  # per call, not the recipe
    params = [p for p in inspect.signature(moe.route).parameters if p not in call_args]
    assert params == fields
    assert list(moe.router_config("mixtral")) == fields
    stub = open(os.path.join(os.path.dirname(moe.__file__), "_native.pyi")).read()
    block = stub[stub.index("class RouterConfig:"):]
    block = block[:block.index("\nclass ")] if "\nclass " in block else block
    assert re.findall(r"^    (\w+): ", block, re.M) == fields
    for f in fields:  # each property carries its docstring from C++
        assert getattr(moe.RouterConfig, f).__doc__


@pytest.mark.parametrize("cls,fields,keywords_of", [
    ("DropConfig", "drop_config_fields", "apply_capacity"),
    ("BlockSpec", "block_spec_fields", None),
])
def test_config_classes_are_written_once(cls, fields, keywords_of):
    """DropConfig and BlockSpec come from the same kind of C++ table: properties with docstrings,
    the stub's annotations, and (DropConfig) apply_capacity's keywords, in one order."""
    import inspect
    import re
    names = getattr(moe, fields)
    assert len(names) == len(set(names)) and names
    stub = open(os.path.join(os.path.dirname(moe.__file__), "_native.pyi")).read()
    block = stub[stub.index(f"class {cls}:"):]
    block = block[:block.index("\nclass ")]
    assert re.findall(r"^    (\w+): ", block, re.M) == names
    for f in names:
        assert getattr(getattr(moe, cls), f).__doc__
    assert list(getattr(moe, cls)().to_dict()) == names
    if keywords_of:
        params = [p for p in inspect.signature(getattr(moe, keywords_of)).parameters if p not in ("routing", "config")]
        assert params == names


def test_drop_config_drives_apply_capacity_and_the_block():
    logits = moe.synthetic_logits(64, 8, seed=5)
    c = moe.DropConfig(factor=0.5, policy="score")
    assert c.factor == 0.5 and c.policy == "score" and c.formula == "megatron" and c.per_expert == []
    a, b = moe.route(logits, "mixtral", keep_scores=True), moe.route(logits, "mixtral", keep_scores=True)
    ra = moe.apply_capacity(a, c)
    rb = moe.apply_capacity(b, factor=0.5, policy="score")
    np.testing.assert_array_equal(ra["dropped"], rb["dropped"])
    assert len(ra["dropped"]) > 0
    np.testing.assert_array_equal(a.indices, b.indices)
    # keywords override the config's fields
    d = moe.route(logits, "mixtral", keep_scores=True)
    assert len(moe.apply_capacity(d, c, factor=4.0)["dropped"]) == 0
    c.per_expert = [3] * 8
    assert c.to_dict()["per_expert"] == [3] * 8
    with pytest.raises(moe.Error, match=r"^\[moe.python.argument\] per_expert holds -1 \(capacities are >= 0\)"):
        c.per_expert = [1, -1]
    with pytest.raises(moe.Error, match=r"^\[moe.capacity.policy\] unknown drop policy .fifo."):
        c.policy = "fifo"
    with pytest.raises(moe.Error, match=r"^\[moe.python.argument\] apply_capacity: unknown option 'capacity'"):
        moe.DropConfig(capacity=3)
    assert "DropConfig(" in repr(c)


def test_block_spec_object_matches_the_dict_form():
    rng = np.random.default_rng(0)
    E, H, F = 4, 8, 16
    spec = moe.BlockSpec(num_experts=E, hidden=H, ffn=F, router=moe.RouterConfig(preset="qwen3_moe", top_k=2))
    assert spec.router["top_k"] == 2 and spec.router["renorm"] == "sum" and spec.activation == "swiglu"
    spec.validate()
    w = {"router_w": rng.standard_normal((E, H), dtype=np.float32),
         "w1": rng.standard_normal((E, F, H), dtype=np.float32), "w3": rng.standard_normal((E, F, H), dtype=np.float32),
         "w2": rng.standard_normal((E, H, F), dtype=np.float32)}
    x = rng.standard_normal((5, H), dtype=np.float32)
    a = moe.MoeBlock(spec, w)
    b = moe.MoeBlock(spec.to_dict(), w)
    np.testing.assert_array_equal(a(x), b(x))
    assert a._b.spec == spec.to_dict()
    capped = moe.MoeBlock(spec, w, capacity=moe.DropConfig(factor=0.25))
    assert capped(x).shape == x.shape and len(capped.last_capacity()["dropped"]) > 0
    spec.shared = "sigmoid"
    with pytest.raises(moe.Error, match=r"^\[moe.models.spec\] : a shared-expert gate without a shared expert"):
        spec.validate()
    with pytest.raises(moe.Error, match=r"^\[moe.models.spec\] unknown activation 'gelu'"):
        spec.activation = "gelu"


def test_router_config_object_matches_the_dict_form():
    c = moe.RouterConfig(preset="deepseek_v3", top_k=4)
    assert c.to_dict() == moe.router_config("deepseek_v3", top_k=4)
    assert c.score == "sigmoid" and c.top_k == 4 and c.num_groups == 8
    c.renorm = "clamp"
    c.renorm_eps = 0.5
    assert c.to_dict()["renorm"] == "clamp"
    logits = moe.synthetic_logits(50, 64, seed=3)
    a = moe.route(logits, **c.to_dict())
    b = moe.route(logits, "deepseek_v3", top_k=4, renorm="clamp", renorm_eps=0.5)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.weights, b.weights)
    with pytest.raises(moe.Error, match=r"^\[moe.config.score_function\] unknown score function .relu."):
        c.score = "relu"
    with pytest.raises(moe.Error, match=r"^\[moe.python.argument\] router: unknown option 'topk'"):
        moe.RouterConfig(topk=3)
    with pytest.raises(moe.Error, match=r"^\[moe.router.top_k\] k=9 exceeds num_experts=8"):
        moe.RouterConfig(preset="mixtral", top_k=9).validate(8)
    assert "RouterConfig(" in repr(c)
