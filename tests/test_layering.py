"""The package's import structure, read from the source (every ``import``, also those inside
functions): no import cycles between spikedeploy's modules, and the core never imports the
applications (``spikedeploy.tracking``) or the front ends (``api``, ``cli``, ``demo``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: where each installed sub-package lives in the repository (pyproject's package-dir)
PACKAGE_DIRS = {
    "spikedeploy": ROOT / "spikedeploy",
    "spikedeploy.models": ROOT / "models",
    "spikedeploy.exporters": ROOT / "exporters",
    "spikedeploy.runtimes": ROOT / "runtimes",
}
#: applications and front ends: nothing outside them may import them
APPLICATIONS = ("spikedeploy.tracking", "spikedeploy.events", "spikedeploy.video")
FRONT_ENDS = ("spikedeploy.api", "spikedeploy.cli", "spikedeploy.demo")
#: the core of the issue's definition: IR, capture, passes, reference, targets and the checks
CORE = (
    "spikedeploy.ir", "spikedeploy.capture", "spikedeploy.passes", "spikedeploy.reference", "spikedeploy.targets",
    "spikedeploy.neurons", "spikedeploy.equivalence", "spikedeploy.validate", "spikedeploy.audit",
    "spikedeploy.energy", "spikedeploy.errors", "spikedeploy.fsutil", "spikedeploy.resources",
    "spikedeploy.loading", "spikedeploy.verification", "spikedeploy.exporting", "spikedeploy.hardware",
    "spikedeploy.htmlreport", "spikedeploy.checkpoint", "spikedeploy.exporters", "spikedeploy.runtimes",
    "spikedeploy.streaming",
)


def _modules() -> dict:
    mods = {}
    for pkg, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if pkg == "spikedeploy" and parts and parts[0] in ("models", "exporters", "runtimes"):
                continue
            mods[".".join([pkg] + parts)] = path
    return mods


def _imports(name: str, path: Path, known) -> set:
    out = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and t != "spikedeploy":
                out.add(t)
    return out


def _graph():
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def _within(mod: str, prefixes) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def test_the_module_list_is_complete():
    graph = _graph()
    assert len(graph) > 40 and "spikedeploy.tracking.run" in graph and "spikedeploy.exporters.lava" in graph
    # the scanner sees lazy imports: the CLI reaches the tracking application only inside functions
    assert any(_within(m, APPLICATIONS) for m in graph["spikedeploy.api"])


def test_no_import_cycles():
    graph = _graph()
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles between modules: {cycles}"


@pytest.mark.parametrize("layer", ["core", "application"])
def test_layers_import_only_downwards(layer):
    graph = _graph()
    bad = []
    for mod, deps in graph.items():
        if layer == "core" and _within(mod, CORE):
            bad += [(mod, d) for d in deps if _within(d, APPLICATIONS + FRONT_ENDS)]
        if layer == "application" and _within(mod, APPLICATIONS):
            bad += [(mod, d) for d in deps if _within(d, FRONT_ENDS)]
    assert not bad, f"{layer} modules importing upwards: {bad}"
