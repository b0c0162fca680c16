"""Architecture rules that import-linter does not check.

* The folder tree is the architecture: the package's top level holds only
  ``__init__.py``, ``version.py`` and ``__main__.py``; every other module sits in a
  package named after its layer.
* The import graph of the modules is acyclic (import-linter checks the direction between
  the layers; this checks that no two modules reach each other, inside a layer too).
* No private name crosses a module border: a name starting with one underscore belongs to
  its module. Every module is parsed; ``from selectivity.x import _name`` (absolute or
  relative) and ``x._name`` where ``x`` is a selectivity module bound by an import fail.
"""

import ast
from pathlib import Path

import grimp

import selectivity

SRC = Path(selectivity.__file__).resolve().parent


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """Absolute name of the module an ImportFrom refers to."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def violations(path: Path, module: str | None = None) -> list[str]:
    """``file:line: what`` for each private name taken from another selectivity module.

    ``module`` is the dotted name the file has in the package (default: from its path).
    """
    module = module or _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found, aliases = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(module, path.name == "__init__.py", node)
            if not source.startswith("selectivity"):
                continue
            for a in node.names:
                if _private(a.name):
                    found.append(f"{path.name}:{node.lineno}: from {source} import {a.name}")
                elif (SRC.parent / source.replace(".", "/") / a.name).is_dir() or (
                    SRC.parent / source.replace(".", "/") / f"{a.name}.py"
                ).exists():
                    aliases.add(a.asname or a.name)  # `from . import plots`: a module
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("selectivity"):
                    aliases.add(a.asname or a.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in aliases:
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_private_name_crosses_a_module_border():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20  # the package's own modules were found
    bad = [v for f in files for v in violations(f)]
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_the_checker_catches_each_form(tmp_path):
    """The checker itself: each forbidden form is reported, public ones are not."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from ..run.files import _json_default\n"
        "from selectivity.core.metrics import _check_num_classes, check_num_classes\n"
        "from .. import plots\n"
        "import selectivity.analysis.summary as summ\n"
        "x = plots._describe\n"
        "y = summ._check_columns\n"
        "z = plots.save_figure\n"
        "w = {}._private_but_not_a_module\n",
        encoding="utf-8",
    )
    found = violations(probe, module="selectivity.analysis.probe")
    assert [f.split(": ", 1)[1] for f in found] == [
        "from selectivity.run.files import _json_default",
        "from selectivity.core.metrics import _check_num_classes",
        "plots._describe",
        "summ._check_columns",
    ]


TOP_LEVEL_ALLOWED = {"__init__.py", "version.py", "__main__.py"}


def test_top_level_holds_only_the_facade():
    loose = sorted(p.name for p in SRC.glob("*.py") if p.name not in TOP_LEVEL_ALLOWED)
    assert not loose, f"modules outside a layer package: {loose}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (a list of nodes, first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the DFS stack, 2 = done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (found := visit(m)) is not None:
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)) is not None:
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_is_acyclic():
    """Module-level imports, function-local ones included (grimp, import-linter's engine).

    A package's ``__init__`` re-exporting its own submodules is not a dependency of the
    package on itself, so edges from a package to its own submodules are left out.
    """
    g = grimp.build_graph("selectivity", cache_dir=None)
    edges: dict[str, set[str]] = {}
    for m in g.modules:
        edges[m] = {
            d
            for d in g.find_modules_directly_imported_by(m)
            if d.startswith("selectivity") and not d.startswith(m + ".")
        }
    assert len(edges) > 60
    cycle = _cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
