"""The rooms and their doors: which package may import which (every import counts, also those
inside functions), and no import circle anywhere in flows/ and ovsctl/.

    flows            imports nothing of ovsctl
    ovsctl.openflow  flows
    ovsctl.k8s       flows
    ovsctl.agent     flows, ovsctl.openflow, ovsctl.k8s, ovsctl.config
    ovsctl.tools     flows
    ovsctl.lab       ovsctl.tools, ovsctl.k8s, flows
    ovsctl.ui        ovsctl.tools, ovsctl.lab, flows
    ovsctl.cli       everything (the root parser)
ovsctl.util (small helpers) and ovsctl.__init__ (the version) may be imported by any room.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = {"ovsctl", "ovsctl.util"}
ALLOWED = {
    "flows": {"flows"},
    "ovsctl.openflow": {"flows", "ovsctl.openflow"},
    "ovsctl.k8s": {"flows", "ovsctl.k8s"},
    "ovsctl.agent": {"flows", "ovsctl.openflow", "ovsctl.k8s", "ovsctl.config", "ovsctl.agent"},
    "ovsctl.tools": {"flows", "ovsctl.tools"},
    "ovsctl.lab": {"flows", "ovsctl.tools", "ovsctl.k8s", "ovsctl.lab"},
    "ovsctl.config": {"ovsctl.config"},
    "ovsctl.ui": {"flows", "ovsctl.tools", "ovsctl.lab", "ovsctl.ui"},
}


def modules() -> dict[str, str]:
    out = {}
    for top in ("flows", "ovsctl"):
        for d, _dirs, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(d, f), ROOT)[:-3].replace(os.sep, ".")
                    out[rel.removesuffix(".__init__")] = os.path.join(d, f)
    return out


MODULES = modules()


def imports(name: str, path: str) -> set[str]:
    """Every project module `name` imports, at any depth of its code."""
    tree = ast.parse(open(path).read(), path)
    pkg = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {m: imports(m, p) for m, p in MODULES.items()}


def room(module: str) -> str:
    for r in sorted(ALLOWED, key=len, reverse=True):
        if module == r or module.startswith(r + "."):
            return r
    return module


@pytest.mark.parametrize("module", sorted(m for m in MODULES if room(m) in ALLOWED))
def test_each_room_imports_only_through_its_doors(module):
    allowed = ALLOWED[room(module)] | SHARED
    bad = {m for m in GRAPH[module] if room(m) not in allowed and m not in allowed}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_no_import_circles():
    """Tarjan's strongly connected components: any component of more than one module is a
    circle (function-level imports count: they only hide one)."""
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v, counter=[0]):  # noqa: B006 - a counter shared by the recursion
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(comp)

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    circles = [sorted(c) for c in comps if len(c) > 1]
    # a package's __init__ importing its own modules is not a circle worth a door
    assert not circles, circles


def test_the_rooms_exist():
    for r in ("ovsctl.agent", "ovsctl.openflow", "ovsctl.k8s", "ovsctl.tools", "ovsctl.lab"):
        assert r in MODULES, r
