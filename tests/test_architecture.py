"""The tree keeps the design's shape (issue #17's done-when): imports go only down the layers of
/work/shared/DESIGN.md, no module import cycle exists (function-level and TYPE_CHECKING imports
count), and no function is longer than 80 lines (a CLI command's option declarations excepted).

Read from the source with `ast`, never by importing it, so a cycle or a layer breach that only a
function body would trigger at run time is caught all the same."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "parasim"

#: Rank of each part of the package: a module may import from its own part or a lower rank. Parts
#: that share a rank know nothing of each other (DESIGN.md: serving "knows nothing of training",
#: training nothing of serving) - except where SIDEWAYS allows it.
LAYERS = {
    "parasim": 0, "errors": 0, "units": 0, "mathx": 0, "registry": 0,  # helpers below specs
    "specs": 1,
    "cost": 2,
    "serving": 3, "training": 3,
    "engines": 4, "validation": 4,
    "search": 5,
    "report": 6,
    "cli": 7,
    "__main__": 8,  # `python -m parasim` runs the CLI
}
#: Same-rank imports the design allows: validation replays cases through the engines' profiles.
#: (Rank 0 - errors, units, mathx, registry - is one layer of helpers that may use each other.)
SIDEWAYS = {("validation", "engines")}

#: Import edges known to close a cycle (none since #17). `test_no_import_cycle` ignores these;
#: `test_known_cycle_edge_is_gone` fails (xfail) while one still closes a cycle. Keep it empty.
KNOWN_CYCLE_EDGES: list[tuple[str, str]] = []

MAX_FUNCTION_LINES = 80
#: Functions known to be over the limit (none since #17). Keep it empty.
KNOWN_LONG: list[str] = []


# --- reading the source ----------------------------------------------------------------------------
def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


@cache
def tree(name: str) -> ast.Module:
    path = modules()[name]
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imported_modules(name: str, node: ast.Import | ast.ImportFrom, known: set[str], is_package: bool) -> list[str]:
    """The parasim modules one import statement loads: `from a.b import c` names the module
    a.b.c when c is a module, else a.b; relative imports are resolved against `name`."""
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    else:
        if node.level:
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[:len(base) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]
    return [t for t in targets if t == "parasim" or t.startswith("parasim.")]


def imports_of(name: str, source: ast.Module, known: set[str], is_package: bool = False) -> dict[str, int]:
    """Every parasim module `source` imports, anywhere in it (module level, inside functions,
    under `if TYPE_CHECKING`), with the line of the first such import."""
    found: dict[str, int] = {}
    for node in ast.walk(source):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in imported_modules(name, node, known, is_package):
                found.setdefault(target, node.lineno)
    return found


@cache
def import_graph() -> dict[str, dict[str, int]]:
    known = set(modules())
    return {m: imports_of(m, tree(m), known, p.name == "__init__.py") for m, p in modules().items()}


def part(module: str) -> str:
    """`parasim.serving.engine` -> `serving`; `parasim` itself is the (empty) package root."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "parasim"


# --- the layer rule --------------------------------------------------------------------------------
def test_every_part_of_the_package_has_a_layer():
    """A new top-level package or module must be placed in the layer map, not slip past the rule."""
    unplaced = sorted({part(m) for m in modules()} - set(LAYERS))
    assert not unplaced, f"add to LAYERS in tests/test_architecture.py: {unplaced}"


def breaches(graph: dict[str, dict[str, int]]) -> list[str]:
    out = []
    for src, targets in graph.items():
        a = part(src)
        for dst, line in targets.items():
            b = part(dst)
            if a == b or a not in LAYERS or b not in LAYERS:
                continue
            up = LAYERS[b] > LAYERS[a]
            sideways = LAYERS[b] == LAYERS[a] and LAYERS[a] > 0 and (a, b) not in SIDEWAYS
            if up or sideways:
                out.append(f"{src} (line {line}) imports {dst}: {a} may not import {b}")
    return sorted(out)


def test_imports_go_only_down_the_layers():
    found = breaches(import_graph())
    assert not found, "\n".join(found)


def test_the_layer_check_sees_imports_inside_functions_and_type_checking_blocks():
    """The collector itself: a function-level import upward and a TYPE_CHECKING one sideways are
    both breaches, a module-level downward import is not."""
    source = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "from parasim.specs import model\n"
        "if TYPE_CHECKING:\n"
        "    from parasim.training.plan import TrainPlan\n"
        "def f():\n"
        "    from ..search import space\n"
        "    import parasim.cli.main\n"
    )
    known = {"parasim.specs.model", "parasim.specs", "parasim.training.plan", "parasim.search.space",
             "parasim.search", "parasim.cli.main"}
    graph = {"parasim.serving.engine": imports_of("parasim.serving.engine", source, known)}
    assert set(graph["parasim.serving.engine"]) == {"parasim.specs.model", "parasim.training.plan",
                                                    "parasim.search.space", "parasim.cli.main"}
    found = breaches(graph)
    assert sorted(f.split(" imports ")[1].split(":")[0] for f in found) == [
        "parasim.cli.main", "parasim.search.space", "parasim.training.plan"]


# --- no cycles -------------------------------------------------------------------------------------
def reachable(graph: dict[str, dict[str, int]] | dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        for n in graph.get(m, ()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (iterative Tarjan: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    group = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        group.append(w)
                        if w == v:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
    return sorted(groups)


def test_cycle_finder_finds_a_cycle_through_three_modules_and_nothing_in_a_chain():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}) == [["a", "b"], ["c", "d"]]


def test_no_import_cycle():
    graph = {m: {t for t in ts if t != m and (m, t) not in KNOWN_CYCLE_EDGES} for m, ts in import_graph().items()}
    found = cycles(graph)
    assert not found, "import cycles (function-level imports count):\n" + "\n".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("src, dst", [pytest.param(*e, marks=pytest.mark.xfail(strict=False, reason="#17: being untangled"))
                                      for e in KNOWN_CYCLE_EDGES])
def test_known_cycle_edge_is_gone(src, dst):
    """Passes once `src` no longer imports `dst`, or `dst` no longer leads back to `src`."""
    graph = import_graph()
    assert not (dst in graph.get(src, {}) and src in reachable(graph, dst)), f"{src} -> {dst} still closes a cycle"


# --- short functions --------------------------------------------------------------------------------
def is_cli_command(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A typer command: a parameter defaults to `typer.Option(...)` / `typer.Argument(...)`."""
    defaults = [d for d in (*fn.args.defaults, *fn.args.kw_defaults) if d is not None]
    return any(isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr in ("Option", "Argument")
               for d in defaults)


def function_lengths(name: str, source: ast.Module) -> dict[str, int]:
    """`module:qualname` -> lines from `def` to the last line; a CLI command counts from its first
    body statement, since its signature is the option declarations."""
    out: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = child.body[0].lineno if is_cli_command(child) else child.lineno
                qual = f"{prefix}{child.name}"
                out[f"{name}:{qual}"] = child.end_lineno - start + 1
                visit(child, f"{qual}.<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(source, "")
    return out


@cache
def all_function_lengths() -> dict[str, int]:
    out: dict[str, int] = {}
    for m in modules():
        out.update(function_lengths(m, tree(m)))
    return out


def test_function_length_counts_lines_and_skips_cli_option_declarations():
    body = "".join(f"    x{i} = {i}\n" for i in range(3))
    options = "".join(f"    o{i}: int = typer.Option(1, '--o{i}'),\n" for i in range(100))
    source = ast.parse(f"class C:\n  def f(self):\n{body}\n\ndef cmd(\n{options}):\n{body}    def g():\n        pass\n")
    assert function_lengths("m", source) == {"m:C.f": 4, "m:cmd": 5, "m:cmd.<locals>.g": 2}


def test_no_function_over_80_lines():
    long = {k: n for k, n in all_function_lengths().items() if n > MAX_FUNCTION_LINES and k not in KNOWN_LONG}
    assert not long, "split these by the jobs they do:\n" + "\n".join(f"{k}: {n} lines" for k, n in sorted(long.items()))


@pytest.mark.parametrize("qualname", [pytest.param(q, marks=pytest.mark.xfail(strict=False, reason="#17: being split"))
                                      for q in KNOWN_LONG])
def test_known_long_function_is_split(qualname):
    """Passes once the function is at most 80 lines (or gone, split into others)."""
    assert all_function_lengths().get(qualname, 0) <= MAX_FUNCTION_LINES
