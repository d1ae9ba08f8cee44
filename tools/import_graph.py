"""The import graph of vtcaps_tf/ and pipeline/ (imported as `vtcaps_pipeline`), read with `ast`,
and the layers it must respect.

    python -m tools.import_graph            # one line per module: its layer and what it imports
    python -m tools.import_graph --dot      # Graphviz, modules grouped by layer
    python -m tools.import_graph --check    # exit 1 and list every upward import

Every import counts, the ones inside functions too: a lazy import is still a dependency. A module
may import modules of its own layer or of lower layers, never of a higher one.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Import name -> folder: pipeline/ installs as `vtcaps_pipeline` (pyproject.toml package-dir).
PACKAGES = {"vtcaps_tf": "vtcaps_tf", "vtcaps_pipeline": "pipeline"}

# Lowest first. A module belongs to the first layer with a prefix matching its dotted name
# (a prefix matches the module itself and everything below it).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("vtcaps_tf.errors", "vtcaps_tf.cli_parsers", "vtcaps_tf.versions", "vtcaps_tf.machine")),
    ("blocks", ("vtcaps_tf.face", "vtcaps_tf.data", "vtcaps_tf.layers", "vtcaps_tf.losses",
                "vtcaps_tf.metrics", "vtcaps_tf.pyramid_options")),
    ("models", ("vtcaps_tf.models",)),
    ("training", ("vtcaps_tf.callbacks", "vtcaps_tf.training", "vtcaps_tf.multiworker",
                  "vtcaps_tf.local_cluster", "vtcaps_tf.evaluate", "vtcaps_tf.crossval",
                  "vtcaps_tf.export", "vtcaps_tf.model_card")),
    ("serving", ("vtcaps_tf.serving",)),
    ("pipeline", ("vtcaps_pipeline",)),
    ("cli", ("vtcaps_tf.cli",)),
]
# The package roots hold only metadata and lazy attribute access: below everything.
ROOT_MODULES = {"vtcaps_tf": "base", "vtcaps_pipeline": "pipeline"}
LAYER_INDEX = {name: i for i, (name, _) in enumerate(LAYERS)}


def module_files(root: str = ROOT) -> dict[str, str]:
    """Dotted (import) module name -> file, for every .py under the packages."""
    out = {}
    for package, folder in PACKAGES.items():
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, folder)):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if not name.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), os.path.join(root, folder))[:-3]
                rel = package + "." + rel.replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(dirpath, name)
    return out


def layer_of(module: str) -> str:
    if module in ROOT_MODULES:
        return ROOT_MODULES[module]
    for name, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name
    raise KeyError(f"{module} is in no layer of tools/import_graph.py LAYERS; add it there")


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that `name` is or lies in (a `from m import f` names `m.f`)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: str, known: set[str]) -> set[str]:
    """The project modules `module` imports anywhere in its file."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                parts = module.split(".")
                parts = parts if is_package else parts[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            target = _resolve(name, known)
            if target and target != module:
                found.add(target)
    return found


def import_graph(root: str = ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    known = set(files)
    return {m: imports_of(m, p, known) for m, p in files.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str, str, str]]:
    """(importer, its layer, imported, its layer) for every import of a higher layer."""
    bad = []
    for module, targets in sorted(graph.items()):
        here = layer_of(module)
        for target in sorted(targets):
            there = layer_of(target)
            if LAYER_INDEX[there] > LAYER_INDEX[here]:
                bad.append((module, here, target, there))
    return bad


def to_dot(graph: dict[str, set[str]]) -> str:
    lines = ["digraph imports {", "  rankdir=BT; node [shape=box, fontsize=10];"]
    for name, _ in LAYERS:
        members = sorted(m for m in graph if layer_of(m) == name)
        lines.append(f'  subgraph "cluster_{name}" {{ label="{name}"; '
                     + " ".join(f'"{m}";' for m in members) + " }")
    for module, targets in sorted(graph.items()):
        lines += [f'  "{module}" -> "{t}";' for t in sorted(targets)]
    lines.append("}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.import_graph", description=__doc__.splitlines()[0])
    p.add_argument("--dot", action="store_true", help="print Graphviz dot")
    p.add_argument("--check", action="store_true", help="exit 1 when a module imports upward")
    args = p.parse_args(argv)
    graph = import_graph()
    if args.dot:
        print(to_dot(graph))
    elif not args.check:
        for name, _ in LAYERS:
            for module in sorted(m for m in graph if layer_of(m) == name):
                print(f"{name:<9} {module:<40} -> {', '.join(sorted(graph[module])) or '-'}")
    bad = upward_imports(graph)
    for module, here, target, there in bad:
        print(f"upward import: {module} ({here}) imports {target} ({there})", file=sys.stderr)
    return 1 if bad and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
