"""The layers of CONTRIBUTING.md's table hold: every import in segcli/ (module-level and inside functions, read
with ast, nothing imported) goes to its own row or to a row above that the table lets it import, and no modules
import each other through any chain. The table is the one source: this test parses it."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "segcli"
CONTRIBUTING = ROOT / "CONTRIBUTING.md"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> dict[str, int]:
    """The segcli modules `name` imports -> the first line that does; `from X import y` counts as X.y where
    that is a module. The package `segcli` itself is left out (every import runs it)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for target in targets:
            if target.startswith("segcli.") and target != name:
                found.setdefault(target, node.lineno)
    return found


def within(module: str, name: str) -> bool:
    return module == name or module.startswith(name + ".")


def read_table() -> list[tuple[list[str], str]]:
    """CONTRIBUTING.md's layer table: (the row's modules, its "may import" cell), top row first."""
    text = CONTRIBUTING.read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")] if line.startswith("| `segcli") else []
        if cells:
            assert len(cells) == 3, f"a layer row with {len(cells)} cells, not module | holds | may import: {line}"
            rows.append((re.findall(r"`(segcli[\w.]*)`", cells[0]), cells[2]))
    return rows


TABLE = read_table()


def row_of(module: str) -> int | None:
    """The row holding `module`: its own name or the nearest package listed (the package `segcli` only itself)."""
    best, length = None, -1
    for i, (names, _) in enumerate(TABLE):
        for name in names:
            if (module == name or (name != "segcli" and within(module, name))) and len(name) > length:
                best, length = i, len(name)
    return best


def allowed(row: int) -> list[str]:
    """The modules row `row` may import from the rows above: the names its cell lists, or every module of the
    rows above ("the rows above") less the names listed after it."""
    cell = TABLE[row][1]
    named = ["segcli." + n if not n.startswith("segcli") else n for n in re.findall(r"`([\w.]+)`", cell)]
    if cell.startswith("the rows above"):
        above = [m for i in range(row) for m in TABLE[i][0]]
        return [m for m in above if not any(within(m, n) for n in named)]
    return named


def test_the_table_is_well_formed_and_lists_every_module():
    assert len(TABLE) > 10, "CONTRIBUTING.md's layer table was not found"
    unlisted = [m for m in MODULES if row_of(m) is None]
    assert not unlisted, f"modules in no row of CONTRIBUTING.md's layer table: {', '.join(unlisted)}"
    for row, (names, cell) in enumerate(TABLE):
        for name in allowed(row):  # a row names only rows above it: no import points down or sideways
            above = row_of(name)
            assert above is not None and above < row, f"row {', '.join(names)} may import {name}, not a row above it"
        if not cell.startswith(("nothing", "the rows above")):
            assert allowed(row), f"row {', '.join(names)}: its 'may import' cell names no module: {cell!r}"


def test_no_module_imports_from_a_layer_it_may_not():
    wrong = []
    for module in MODULES:
        row = row_of(module)
        for target, line in imports_of(module).items():
            target_row = row_of(target)
            if target_row == row or any(within(target, n) for n in allowed(row)):
                continue
            where = "below it" if target_row is None or target_row > row else "not in its row's list"
            wrong.append(f"{module} (line {line}) imports {target} ({where})")
    assert not wrong, "imports against CONTRIBUTING.md's layer table:\n" + "\n".join(wrong)


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected group of modules (Tarjan), as a path that comes back to its start."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    circles = []
    for group in groups:  # a path around the group: breadth-first from its first module back to it
        start = min(group)
        paths = {start: [start]}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w in sorted(graph[v] & group):
                if w == start:
                    circles.append(paths[v] + [start])
                    queue = []
                    break
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
    return circles


def test_no_import_circles():
    graph = {m: set(imports_of(m)) & set(MODULES) for m in MODULES}
    circles = find_circles(graph)
    assert not circles, "modules that import each other:\n" + "\n".join(" -> ".join(c) for c in circles)


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c", "a"]]),
    ({"a": {"b"}, "b": set(), "c": {"b"}}, []),
])
def test_the_circle_finder_finds_circles(graph, expected):
    assert find_circles(graph) == expected


def test_the_checks_catch_a_planted_upward_import(tmp_path, monkeypatch):
    """A module of a low row that imports a higher one is reported (the check is not vacuous)."""
    fake = tmp_path / "segcli" / "errors.py"
    fake.parent.mkdir()
    fake.write_text("def f():\n    from segcli.training import train\n")
    monkeypatch.setitem(MODULES, "segcli.errors", fake)
    assert imports_of("segcli.errors") == {"segcli.training": 2}
    with pytest.raises(AssertionError, match=r"segcli.errors \(line 2\) imports segcli.training \(below it\)"):
        test_no_module_imports_from_a_layer_it_may_not()
