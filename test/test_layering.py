"""Import layering: the folder tree is the data flow, and imports only go down it.

``loger_core`` never imports ROS (``rclpy``, ROS message packages) or ``loger_ros``; inside
``loger_core`` each folder imports only the folders its row of :data:`MAY_IMPORT` names (and
itself); no module imports itself back through others (no import circles, function-level
imports included). Static: the source is parsed, nothing is imported. docs/architecture.md has
the same table with each folder's job.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# folder of loger_core -> the other loger_core folders it may import. Lower layers first:
# frames -> network -> stream -> map -> pipeline -> outputs / tools.
MAY_IMPORT: dict[str, set[str]] = {
    "model": set(),                      # the network
    "mapping": set(),                    # voxel map, grid, downsampling (numpy / torch only)
    "io": {"mapping"},                   # image folders, videos, trajectories, session files
    "eval": {"io"},                      # metrics and plots
    "synthetic": {"io"},                 # procedural test data
    "stream": {"model", "io", "mapping"},  # windows in, per-frame poses / points out
    "pipeline": {"stream", "model", "mapping", "io"},  # the mapping core all tools drive
    "backend": {"pipeline", "stream", "model", "mapping", "io"},  # geometric back end (hooks into pipeline)
    "training": {"model", "synthetic", "eval", "io", "stream", "mapping"},
    "cli": {"pipeline", "stream", "model", "mapping", "io", "eval", "synthetic", "backend", "training"},
    "weights": set(),
}
# (rosbags, a pure-Python bag library, is not ROS: loger_core.synthetic writes test bags with it.)
FORBIDDEN_IN_CORE = ("rclpy", "loger_ros", "sensor_msgs", "nav_msgs", "geometry_msgs", "tf2_ros", "rclpy_message_converter")
# loger_ros.conversions is ROS-free message code: it may use only itself, loger_ros.errors and
# the pipeline's numeric checks.
CONVERSIONS_MAY_IMPORT = ("loger_ros.conversions", "loger_ros.errors", "loger_core.pipeline.checks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (top-level and inside functions), absolute names."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            # `from pkg import module` imports the submodule.
            out.update(f"{name}.{alias.name}" for alias in node.names)
    return out


def _sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _known_modules() -> set[str]:
    return {_module_name(p) for pkg in ("loger_core", "loger_ros") for p in _sources(pkg)}


def test_loger_core_never_imports_ros_or_loger_ros():
    bad = [(_module_name(p), m) for p in _sources("loger_core") for m in _imports(p)
           if m.split(".")[0] in FORBIDDEN_IN_CORE]
    assert not bad, f"loger_core imports ROS / loger_ros: {bad}"


def test_every_loger_core_folder_is_in_the_table():
    folders = {p.name for p in (REPO / "loger_core").iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders <= set(MAY_IMPORT), f"add these folders to MAY_IMPORT (and docs/architecture.md): {folders - set(MAY_IMPORT)}"


def test_lower_layers_never_import_higher_ones():
    bad = []
    for path in _sources("loger_core"):
        parts = path.relative_to(REPO / "loger_core").parts
        if len(parts) < 2:
            continue  # loger_core/__init__.py
        folder = parts[0]
        for name in _imports(path):
            p = name.split(".")
            if p[0] != "loger_core" or len(p) < 2 or p[1] == folder or not (REPO / "loger_core" / p[1]).is_dir():
                continue
            if p[1] not in MAY_IMPORT[folder]:
                bad.append(f"{_module_name(path)} -> {name}")
    assert not bad, "imports against the layering (see MAY_IMPORT):\n" + "\n".join(bad)


def test_conversions_stay_message_code():
    bad = [(_module_name(p), m) for p in _sources("loger_ros/conversions") for m in _imports(p)
           if m.split(".")[0] in ("loger_core", "loger_ros") and not m.startswith(CONVERSIONS_MAY_IMPORT)]
    assert not bad, bad


def test_no_import_circles():
    known = _known_modules()
    graph = {}
    for pkg in ("loger_core", "loger_ros"):
        for path in _sources(pkg):
            graph[_module_name(path)] = {m for m in _imports(path) if m in known and m != _module_name(path)}
    # A package's own __init__ re-exporting its modules is not a circle: drop module -> own-package edges.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("folder", sorted(p.name for p in (REPO / "loger_core").iterdir()
                                          if (p / "__init__.py").is_file()))
def test_each_folder_says_what_it_does_and_may_import(folder):
    doc = ast.get_docstring(ast.parse((REPO / "loger_core" / folder / "__init__.py").read_text())) or ""
    assert doc and "import" in doc.lower(), f"loger_core/{folder}/__init__.py: docstring must say its job and what it may import"
