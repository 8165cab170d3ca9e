"""The package's module graph has no import cycles, and importing a program defines no flags."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "maskpre_tf")


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
    return rel.removesuffix(".__init__")


def _imports(path: str, modules: set[str]) -> set[str]:
    """maskpre_tf modules a module imports anywhere: at module level and inside functions
    (a deferred import still makes a cycle), absolute or relative."""
    with open(path) as f:
        tree = ast.parse(f.read())
    package = _module_name(path)
    if not path.endswith("__init__.py"):
        package = package.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in modules}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = [
        os.path.join(d, f) for d, _, files in os.walk(PACKAGE) for f in files if f.endswith(".py")
    ]
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) - {_module_name(p)} for p in paths}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    graph = import_graph()
    assert "maskpre_tf.training.train_lib" in graph and len(graph) > 40
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_importing_the_programs_defines_no_flags():
    code = (
        "from absl import flags\n"
        "import maskpre_tf.train, maskpre_tf.evaluate, maskpre_tf.clustering.probe\n"
        "import maskpre_tf.export.__main__, maskpre_tf.search.__main__\n"
        "import maskpre_tf.weights.__main__, maskpre_tf.embed\n"
        "print(sorted(n for n in ('eps', 'run_dir', 'checkpoint', 'gallery', 'export_dir', 'arch',"
        " 'run', 'images', 'results_dir')"
        " if n in flags.FLAGS))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
