"""The shape of the house, read from every module's imports (ast, lazy
imports included):

- the domain package khhf imports nothing of ours outside itself;
- the three doors agi, ami_bridge and webui never import each other, nor do
  the other daemons (smsgw, jobs) import a door;
- support holds support only: amiclient (the AMI socket adapter) imports
  nothing of ours, PBX control (pbxctl) renders and starts the PBX and does
  not query the domain (no models, session or services);
- no module imports itself back through others (no import circles).

The test kit (simkit) and the benchmarks (bench) may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# what each top-level package may import of ours, besides itself
MAY_IMPORT: dict[str, set[str]] = {
    "khhf": set(),                          # the domain: models, session, config, services
    "agi": {"khhf"},                        # the three doors
    "ami_bridge": {"khhf", "amiclient"},
    "webui": {"khhf"},
    "smsgw": {"khhf"},                      # the other daemons
    "jobs": {"khhf"},
    "amiclient": set(),                     # support: sockets and AMI messages only
    "pbxctl": {"khhf", "amiclient"},        # support: renders and starts the PBX
    "khhfcli": {"khhf", "pbxctl", "simkit"},  # the operator's command (the demo runs the kit)
    "simkit": None,                         # the test kit and the benchmarks: anything
    "bench": None,
}
# modules a package may not import although it may import their package
NOT_FROM: dict[str, tuple[str, ...]] = {
    # PBX control is given the desk phones; it does not query the database
    "pbxctl": ("khhf.models", "khhf.db", "khhf.services"),
}
# (importing module, imported module) edges that break a rule today, each
# with the change that removes it; a listed edge that is gone fails too, so
# the list cannot outlive its reason
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {
    # the rule: the CLI speaks Chinese without importing the web package
}


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """{dotted module name: file} for every module of our packages."""
    modules = {}
    for package in MAY_IMPORT:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imports_of(name: str, source: str, is_package: bool, known: set[str]) -> dict[str, int]:
    """{module of ours that `name` imports: line}, for `import`s anywhere in
    the source (in functions too). `from p import x` is p.x when x is a
    module, else p; a name outside `known` resolves to its nearest known
    parent (or is not ours)."""
    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join(package + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            resolved = resolve(target)
            if resolved and resolved != name:
                found.setdefault(resolved, node.lineno)
    return found


def import_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    files = module_files(root)
    known = set(files)
    return {name: imports_of(name, path.read_text(encoding="utf-8"), path.name == "__init__.py",
                             known)
            for name, path in files.items()}


def rule_breaks(graph: dict[str, dict[str, int]]) -> list[tuple[str, str, int]]:
    """(importer, imported, line) for every import the layer rules refuse."""
    breaks = []
    for importer, targets in sorted(graph.items()):
        package = importer.split(".")[0]
        allowed = MAY_IMPORT[package]
        if allowed is None:
            continue
        for target, line in sorted(targets.items()):
            other = target.split(".")[0]
            if (other != package and other not in allowed) or any(
                    target == m or target.startswith(m + ".") for m in NOT_FROM.get(package, ())):
                breaks.append((importer, target, line))
    return breaks


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The import circles: strongly connected sets of more than one module
    (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == node:
                        break
                if len(members) > 1:
                    found.append(sorted(members))
    return sorted(found)


# -- the house ---------------------------------------------------------------------------
def test_every_package_has_a_rule():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages <= set(MAY_IMPORT), packages - set(MAY_IMPORT)


def test_the_layers_hold():
    breaks = [(a, b, line) for a, b, line in rule_breaks(import_graph())
              if (a, b) not in KNOWN_EXCEPTIONS]
    assert breaks == [], "\n".join(f"{a.replace('.', '/')}.py:{line} imports {b}"
                                   for a, b, line in breaks)


def test_each_known_exception_still_exists():
    """A listed exception whose import is gone must leave the list."""
    graph = import_graph()
    gone = [edge for edge in KNOWN_EXCEPTIONS if edge[1] not in graph.get(edge[0], {})]
    assert gone == [], f"no longer imported, delete from KNOWN_EXCEPTIONS: {gone}"


def test_no_import_circles():
    assert cycles(import_graph()) == []


# -- the checks can fail -----------------------------------------------------------------
@pytest.mark.parametrize("importer,source,expected", [
    ("khhf.services.x", "from webui import i18n", "webui.i18n"),
    ("khhf.services.x", "def f():\n    import pbxctl.pbx", "pbxctl.pbx"),
    ("ami_bridge.bridge", "from pbxctl.pbx import Pbx", "pbxctl.pbx"),
    ("webui.calls", "from agi.routes import ROUTES", "agi.routes"),
    ("agi.server", "import ami_bridge.commands", "ami_bridge.commands"),
    ("pbxctl.pbx", "def f():\n    from khhf.models import Manager", "khhf.models"),
    ("pbxctl.pbx", "from khhf.services import accounts", "khhf.services.accounts"),
    ("amiclient", "from khhf import config", "khhf.config"),
    ("smsgw.gateway", "from webui.i18n import label", "webui.i18n"),
])
def test_a_wrong_way_import_is_seen(importer, source, expected):
    known = set(module_files()) | {importer}
    graph = {importer: imports_of(importer, source, False, known)}
    assert [(a, b) for a, b, _ in rule_breaks(graph)] == [(importer, expected)]


def test_allowed_imports_pass():
    known = set(module_files())
    for importer, source in [("pbxctl.pbx", "from khhf.config import Settings"),
                             ("ami_bridge.bridge", "from amiclient import AmiClient"),
                             ("khhfcli.pbx", "from pbxctl import pbx"),
                             ("simkit.web", "from webui import create_app"),
                             ("webui.calls", "from .access import allow")]:
        graph = {importer: imports_of(importer, source, False, known)}
        assert rule_breaks(graph) == [], source


def test_a_circle_is_seen_also_through_a_lazy_or_relative_import():
    known = {"khhfcli", "khhfcli.main", "khhfcli.demo", "khhf", "khhf.a", "khhf.b", "khhf.c"}
    graph = {
        "khhfcli.main": imports_of("khhfcli.main", "def f():\n    from . import demo", False,
                                   known),
        "khhfcli.demo": imports_of("khhfcli.demo", "from .main import x", False, known),
        "khhf.a": {"khhf.b": 1}, "khhf.b": {"khhf.c": 1}, "khhf.c": {"khhf.a": 1},
    }
    assert cycles(graph) == [["khhf.a", "khhf.b", "khhf.c"], ["khhfcli.demo", "khhfcli.main"]]
