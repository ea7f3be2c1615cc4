"""The package's floors hold: every import of a tnpeft module goes down (or stays in its own
package), nothing imports in a cycle, in-function imports of tnpeft modules appear only in the
command line, no module reaches a private name of another, and no module grows past ~400 lines.

The floors, lowest first (docs/concepts.md draws them)::

    errors → {caches, fileio} → circuits → params → contract → graph → runtime → {storage, algebra} → adapters
           → {draw, quantum, verification, testing} → nn → train → cli, tnpeft (the package's own __init__)

Packages on one floor are siblings: none of them imports another. The graph definition
(``graph``) never sees the runtime that holds its values (``runtime``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "tnpeft"

FLOORS: list[tuple[str, ...]] = [
    ("tnpeft.errors",),
    ("tnpeft.caches", "tnpeft.fileio"),
    ("tnpeft.circuits",),
    ("tnpeft.params",),
    ("tnpeft.contract",),
    ("tnpeft.graph",),
    ("tnpeft.runtime",),
    ("tnpeft.storage", "tnpeft.algebra"),
    ("tnpeft.adapters",),
    ("tnpeft.draw", "tnpeft.quantum", "tnpeft.verification", "tnpeft.testing"),
    ("tnpeft.nn",),
    ("tnpeft.train",),
    ("tnpeft.cli", "tnpeft"),
]
# where start-up time justifies importing inside functions: the command line loads only what a verb needs
LAZY_OK = {"tnpeft.cli", "tnpeft.cli.commands"}
MAX_LINES = 420


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def floor_of(mod: str) -> tuple[int, str]:
    """(floor, the floor's package the module belongs to)."""
    best = None
    for i, pkgs in enumerate(FLOORS):
        for pkg in pkgs:
            if (mod == pkg or mod.startswith(pkg + ".")) and pkg != "tnpeft":
                if best is None or len(pkg) > len(best[1]):
                    best = (i, pkg)
    return best if best is not None else (len(FLOORS) - 1, "tnpeft")


def resolve(name: str) -> str:
    """The tnpeft module an import names (the longest known prefix)."""
    parts = name.split(".")
    while parts and ".".join(parts) not in MODULES:
        parts.pop()
    return ".".join(parts)


class Imports(ast.NodeVisitor):
    """Imports of tnpeft modules: (target, line, inside a function, only for type checking)."""

    def __init__(self) -> None:
        self.found: list[tuple[str, int, bool, bool, list[str]]] = []
        self.depth = 0
        self.typing = 0

    def visit_FunctionDef(self, node):  # noqa: N802
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    def visit_If(self, node):  # noqa: N802
        checking = isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        self.typing += checking
        for child in node.body:
            self.visit(child)
        self.typing -= checking
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node):  # noqa: N802
        for a in node.names:
            if a.name == "tnpeft" or a.name.startswith("tnpeft."):
                self.found.append((resolve(a.name), node.lineno, self.depth > 0, self.typing > 0, []))

    def visit_ImportFrom(self, node):  # noqa: N802
        mod = node.module or ""
        if node.level or not (mod == "tnpeft" or mod.startswith("tnpeft.")):
            return
        names = [a.name for a in node.names]
        targets = {resolve(mod)}
        for n in names:  # "from tnpeft.graph import module" imports the submodule too
            if f"{mod}.{n}" in MODULES:
                targets.add(f"{mod}.{n}")
        for t in targets:
            self.found.append((t, node.lineno, self.depth > 0, self.typing > 0, names))


def imports_of(mod: str) -> list[tuple[str, int, bool, bool, list[str]]]:
    v = Imports()
    v.visit(ast.parse(MODULES[mod].read_text()))
    return v.found


ALL = {m: imports_of(m) for m in MODULES}


def test_the_floors_know_every_module():
    assert "tnpeft.graph.graph" in MODULES and "tnpeft.nn.model" in MODULES
    for m in MODULES:
        assert floor_of(m)[1] != "tnpeft" or m == "tnpeft", f"{m} belongs to no floor"


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_imports_go_down(mod):
    here, pkg = floor_of(mod)
    for target, line, _, _, _ in ALL[mod]:
        there, tpkg = floor_of(target)
        if tpkg == pkg:
            continue
        assert there < here, (f"{MODULES[mod].relative_to(ROOT.parent)}:{line} imports {target} (floor {there}, "
                              f"{tpkg}) from floor {here} ({pkg}): imports must go down")


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_no_in_function_imports_of_tnpeft_modules(mod):
    if mod in LAZY_OK:
        return
    lazy = [(t, line) for t, line, inside, _, _ in ALL[mod] if inside]
    assert not lazy, f"{MODULES[mod].relative_to(ROOT.parent)} imports {lazy} inside functions; import at the top"


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_no_private_names_from_other_modules(mod):
    for target, line, _, _, names in ALL[mod]:
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private or target == mod, (f"{MODULES[mod].relative_to(ROOT.parent)}:{line} imports private "
                                              f"{private} from {target}")


def test_no_import_cycle():
    # edges that run when the module is imported (TYPE_CHECKING blocks do not)
    edges = {m: sorted({t for t, _, inside, typing, _ in ALL[m] if not typing and not inside and t != m})
             for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in MODULES:
        if m not in index:
            visit(m)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_modules_stay_small(mod):
    n = len(MODULES[mod].read_text().splitlines())
    assert n <= MAX_LINES, f"{MODULES[mod].relative_to(ROOT.parent)} has {n} lines; split it (at most ~400)"


def test_no_two_modules_share_a_file_name():
    seen: dict[str, str] = {}
    for p in MODULES.values():
        if p.name == "__init__.py":
            continue
        assert p.name not in seen, f"{p.relative_to(ROOT.parent)} and {seen[p.name]} share a file name"
        seen[p.name] = str(p.relative_to(ROOT.parent))


def test_generic_floors_never_name_a_method():
    # training, checkpoints and the torch integration ask the method registry; they never name a method
    for m, p in MODULES.items():
        if m.startswith(("tnpeft.train", "tnpeft.nn")):
            code = "\n".join(line for line in p.read_text().splitlines() if not line.lstrip().startswith("#"))
            assert "adalora" not in code.lower(), f"{p.relative_to(ROOT.parent)} names a method (adalora)"


def test_the_graph_definition_never_sees_its_runtime():
    # a Graph is structure; values live in tnpeft.runtime, which the definition never imports (not even
    # for type checking)
    for m in MODULES:
        if m == "tnpeft.graph" or m.startswith("tnpeft.graph."):
            bad = [(t, line) for t, line, _, _, _ in ALL[m] if t == "tnpeft.runtime" or t.startswith("tnpeft.runtime.")]
            assert not bad, f"{MODULES[m].relative_to(ROOT.parent)} imports the runtime: {bad}"


# the one print outside the command line: peft's print_trainable_parameters, which users call by that name
PRINT_OK = {("tnpeft.nn.model", "print_trainable_parameters")}
ALIGNED = re.compile(r"^.?[<>^](\d|\{\})")


def terminal_formatting(mod: str) -> list[str]:
    """Where ``mod`` prints or lays text out in padded columns (a table for a terminal)."""
    tree = ast.parse(MODULES[mod].read_text())
    found = []
    for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))] + [tree]:
        body = fn.body if fn is not tree else [s for s in tree.body if not isinstance(s, (ast.FunctionDef, ast.ClassDef))]
        for n in (x for stmt in body for x in ast.walk(stmt)):
            name = getattr(fn, "name", "<module>")
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print" \
                    and (mod, name) not in PRINT_OK:
                found.append(f"{name}:{n.lineno} print")
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in ("ljust", "rjust", "center"):
                found.append(f"{name}:{n.lineno} .{n.func.attr}()")
            if isinstance(n, ast.FormattedValue) and n.format_spec is not None:
                spec = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in n.format_spec.values)
                if ALIGNED.match(spec):
                    found.append(f"{name}:{n.lineno} aligned field {spec!r}")
    return sorted(set(found))


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if not (m == "tnpeft.cli" or m.startswith("tnpeft.cli."))))
def test_only_the_command_line_prints_tables(mod):
    found = terminal_formatting(mod)
    assert not found, (f"{MODULES[mod].relative_to(ROOT.parent)} formats text for a terminal ({found}); return data "
                       "or plain lines, and lay out tables in tnpeft/cli/tables.py")


MAX_FUNCTION_LINES = 80
LONG_OK = "# long:"   # a comment on the line above a function's def says why it may be longer


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_functions_stay_short(mod):
    lines = MODULES[mod].read_text().splitlines()
    long = []
    for n in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([n.lineno] + [d.lineno for d in n.decorator_list])
            size = n.end_lineno - n.lineno + 1
            if size > MAX_FUNCTION_LINES and not lines[first - 2].strip().startswith(LONG_OK):
                long.append(f"{n.name} ({size} lines, line {n.lineno})")
    assert not long, (f"{MODULES[mod].relative_to(ROOT.parent)}: {long} — split into phases, or say why above the "
                      f"def with a '{LONG_OK} …' comment")


def test_the_table_check_finds_tables():
    # the checks above can fail: a module that prints an aligned table is caught
    src = "def f(rows):\n    for r in rows:\n        print(f'{r[0]:<{10}}{r[1]:>8}')\n"
    tree = ast.parse(src)
    specs = ["".join(v.value if isinstance(v, ast.Constant) else "{}" for v in n.format_spec.values)
             for n in ast.walk(tree) if isinstance(n, ast.FormattedValue) and n.format_spec is not None]
    assert [bool(ALIGNED.match(s)) for s in specs] == [True, True]
