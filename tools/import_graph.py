"""The import graph of vtcaps_tf/ and pipeline/ (imported as `vtcaps_pipeline`), read with `ast`,
and the layers it must respect.

    python -m tools.import_graph            # one line per module: its layer and what it imports
    python -m tools.import_graph --dot      # Graphviz, modules grouped by layer
    python -m tools.import_graph --check    # exit 1 and list every upward import and every cycle

Every import counts, the ones inside functions too: a lazy import is still a dependency. A module
may import modules of its own layer or of lower layers, never of a higher one, and no module may
reach itself through the modules it imports (a cycle), within a layer too.
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
    ("base", ("vtcaps_tf.errors", "vtcaps_tf.config", "vtcaps_tf.utils")),
    ("blocks", ("vtcaps_tf.face", "vtcaps_tf.data", "vtcaps_tf.layers")),
    ("models", ("vtcaps_tf.models",)),
    ("evaluation", ("vtcaps_tf.evaluation",)),
    ("export", ("vtcaps_tf.export",)),
    ("train", ("vtcaps_tf.train",)),
    ("serving", ("vtcaps_tf.serving",)),
    ("apps", ("vtcaps_tf.apps",)),
    ("beam", ("vtcaps_pipeline.beam",)),
    ("synth", ("vtcaps_pipeline.synth",)),
    ("orchestration", ("vtcaps_pipeline.orchestration",)),
    ("cli", ("vtcaps_tf.cli",)),
]
# The package roots hold only metadata and lazy attribute access: below everything.
ROOT_MODULES = {"vtcaps_tf": "base", "vtcaps_pipeline": "beam"}
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
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
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


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle's modules (a strongly connected component of more than one module, or a module
    importing itself), each list sorted, the list sorted; Tarjan's algorithm, iteratively."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph.get(target, ())))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph.get(node, ()):
                        cycles.append(sorted(component))
    return sorted(cycles)


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
    p.add_argument("--check", action="store_true",
                   help="exit 1 when a module imports upward or modules import each other in a cycle")
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
    cycles = import_cycles(graph)
    for cycle in cycles:
        print(f"import cycle: {' <-> '.join(cycle)}", file=sys.stderr)
    return 1 if (bad or cycles) and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
