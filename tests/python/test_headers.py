"""The header structure docs/architecture.md states, checked on include/moe: every header is in
one layer of its table (or forwards to one), includes only its own layer or below, moe.hpp
reaches every header of the layers it names, and a family's names appear in its recipe header and
the registry only."""
import os
import re
from fnmatch import fnmatch

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INC = os.path.join(ROOT, "include", "moe")
DOC = os.path.join(ROOT, "docs", "architecture.md")

pytestmark = pytest.mark.skipif(not (os.path.isdir(INC) and os.path.isfile(DOC)), reason="needs the source tree")


def headers():
    out = {}
    for d, _, fs in os.walk(INC):
        for f in fs:
            if f.endswith(".hpp"):
                p = os.path.join(d, f)
                out[os.path.relpath(p, INC).replace(os.sep, "/")] = open(p).read()
    return out


def includes(rel, text):
    base = os.path.dirname(rel)
    return [os.path.normpath(os.path.join(base, m)).replace(os.sep, "/") for m in re.findall(r'^#include "([^"]+)"', text, re.M)]


def layers():
    """{pattern: layer} from the table of docs/architecture.md's 'Layers of headers'."""
    text = open(DOC).read()
    table = text[text.index("## Layers of headers"):]
    pats = {}
    for n, cell in re.findall(r"^\| (\d+)\. [^|]+\| ([^|]+) \|", table, re.M):
        for tok in re.findall(r"`([^`]+\.hpp)`", cell):
            pats[tok.replace("moe/", "", 1) if tok.startswith("moe/") else tok] = int(n)
    return pats


def layer_of(rel, pats):
    hits = [L for p, L in pats.items() if fnmatch(rel, p)]
    return min(hits) if hits else None


def is_forwarding(text):
    body = [l for l in text.splitlines() if l.strip() and not l.startswith("//")]
    return all(l.startswith("#pragma once") or l.startswith("#include") for l in body)


def test_every_header_sits_in_a_layer_and_includes_downwards():
    pats, hs = layers(), headers()
    assert len(pats) > 20
    bad = []
    for rel, text in hs.items():
        if rel == "moe.hpp":
            continue
        L = layer_of(rel, pats)
        if L is None:
            if not is_forwarding(text):
                bad.append(f"{rel}: in no layer of docs/architecture.md")
            continue
        for t in includes(rel, text):
            TL = layer_of(t, pats)
            if t not in hs:
                bad.append(f"{rel} includes {t}, which does not exist")
            elif TL is not None and TL > L:
                bad.append(f"{rel} (layer {L}) includes {t} (layer {TL})")
    assert bad == []


def test_moe_hpp_reaches_every_header_but_the_optional_ones():
    pats, hs = layers(), headers()
    optional = max(pats.values())
    seen, todo = set(), ["moe.hpp"]
    while todo:
        rel = todo.pop()
        if rel in seen or rel not in hs:
            continue
        seen.add(rel)
        todo += includes(rel, hs[rel])
    missing = [r for r in hs if layer_of(r, pats) not in (None, optional) and r not in seen]
    assert missing == []
    assert not any(layer_of(r, pats) == optional for r in seen)


def test_a_family_is_named_in_its_recipe_and_the_registry_only():
    hs = headers()
    fam = {r: t for r, t in hs.items() if r.startswith("models/families/")}
    assert len(fam) >= 12
    bad = []
    for rel, text in fam.items():
        names = set()
        for key in ("hf_types", "preset_names", "gguf_archs"):
            m = re.search(key + r"\s*=\s*\{([^}]*)\}", text)
            if m:
                names |= set(re.findall(r'"([^"]+)"', m.group(1)))
        names.discard("llama")  # llama.cpp's GGUF name for Mixtral: the word is everywhere
        for n in names:
            where = [r for r, t in hs.items() if re.search(r"(?<![\w-])" + re.escape(n) + r"(?![\w-])", t)]
            extra = [r for r in where if r not in (rel, "models/families.hpp")]
            if extra:
                bad.append(f"{n} ({rel}) also in {extra}")
    assert bad == []
