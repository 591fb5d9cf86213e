"""The layering the docstrings state, checked on the source (parsed with `ast`; nothing is imported):
`bench` names no plug-in package (systems, tasks) outside its loader, bench/plugins.py, which names
the packages alone (their registries), never a module inside one; systems and tasks never import
each other; and no module of the project reaches itself again through its imports (an import circle).
Imports inside functions count: a circle hidden in a function is still code in the wrong file. Only
imports under `if TYPE_CHECKING:` are left out of the circles (they never run)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "systems", "tasks", "corpus")
PLUGINS = ("systems", "tasks")
LOADERS = ("bench.plugins",)  # where bench finds its plug-ins: through their registries, imported lazily


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the project's packages: dotted name → file."""
    out = {}
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = f.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _typing_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _called(call: ast.Call) -> str | None:
    return getattr(call.func, "attr", getattr(call.func, "id", None))


def imports(name: str, path: Path, known: dict[str, Path], typing: bool = True) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, at any depth; a name that `from X import`
    takes is the module X.NAME where that is one, else X; `importlib.import_module("X")` counts too.
    `typing` False: leave out imports under `if TYPE_CHECKING:`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []

    def visit(node: ast.AST) -> None:
        if not typing and _typing_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            out.extend((f"{base}.{a.name}" if f"{base}.{a.name}" in known else base, node.lineno) for a in node.names)
        elif isinstance(node, ast.Call) and _called(node) == "import_module" and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            out.append((node.args[0].value, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return out


def crossings(known: dict[str, Path], root: Path = ROOT) -> list[str]:
    """`file:line imports module` for every import that breaks the layering."""
    bad = []
    for name, path in known.items():
        top = name.split(".")[0]
        for target, line in imports(name, path, known):
            other = target.split(".")[0]
            if (top == "bench" and other in PLUGINS and (name not in LOADERS or target != other)) or \
                    (top in PLUGINS and other in PLUGINS and other != top):
                bad.append(f"{path.relative_to(root)}:{line} imports {target}")
    return bad


def circles(known: dict[str, Path]) -> list[list[str]]:
    """The import circles: every strongly connected group of more than one module (Tarjan)."""
    graph = {name: {t for t, _ in imports(name, path, known, typing=False) if t in known and t != name}
             for name, path in known.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for v in graph:
        if v not in index:
            connect(v)
    return found


def test_bench_names_no_plug_in_outside_its_loader_and_plug_ins_not_each_other():
    assert crossings(modules()) == []


def test_no_import_circles():
    assert circles(modules()) == []


def _tree(root: Path, files: dict[str, str]) -> None:
    for pkg in PACKAGES:
        (root / pkg).mkdir()
        (root / pkg / "__init__.py").write_text("")
    for rel, text in files.items():
        (root / rel).write_text(text)


def test_the_checks_see_what_breaks_the_layering(tmp_path):
    """The same checks on a small tree that breaks every rule, in the ways code tends to."""
    _tree(tmp_path, {
        "bench/plugins.py": "import importlib\nREG = importlib.import_module('systems')\n"  # the loader: allowed,
                            "KIND = importlib.import_module('tasks.manifest').kind_of\n",  # not past a registry
        "bench/runner.py": "def f():\n    from systems.llm import ChatLLM\n",  # a plug-in, hidden in a function
        "bench/report.py": "import importlib\nX = importlib.import_module('tasks.builtin')\n",
        "systems/llm.py": "from systems.common import x\n",
        "systems/common.py": "def load():\n    from . import llm\n",  # a circle, relative and in a function
        "systems/text.py": "from tasks import builtin\n",
        "tasks/builtin.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tasks.manifest import M\n",
        "tasks/manifest.py": "from tasks.builtin import ASR\n",  # a circle only for a type checker: none
    })
    known = modules(tmp_path)
    assert crossings(known, tmp_path) == ["bench/plugins.py:3 imports tasks.manifest",
                                          "bench/report.py:2 imports tasks.builtin",
                                          "bench/runner.py:2 imports systems.llm",
                                          "systems/text.py:1 imports tasks.builtin"]
    assert circles(known) == [["systems.common", "systems.llm"]]
