"""No module of vtcaps_tf/ or pipeline/ (imported as `vtcaps_pipeline`) imports a higher layer
(tools/import_graph.py defines them: base < blocks < models < evaluation < export < train <
serving < apps < beam < synth < orchestration < cli), and no modules import each other in a cycle.
Imports inside functions count too."""

import ast
import os
import re
import textwrap

import pytest

from tools import import_graph as ig


def test_every_module_has_a_layer_and_none_imports_upward():
    graph = ig.import_graph()
    assert "vtcaps_tf.models.vt3dcapsnet" in graph and "vtcaps_pipeline.orchestration.runner" in graph  # walked both trees
    for module in graph:
        ig.layer_of(module)  # KeyError names a module missing from LAYERS
    bad = ig.upward_imports(graph)
    assert not bad, "upward imports:\n" + "\n".join(
        f"  {m} ({lm}) imports {t} ({lt})" for m, lm, t, lt in bad)


def test_nothing_imports_the_preprocessing_package_by_its_folder_name():
    # pytest's pythonpath puts the repository root on sys.path, where `import pipeline` would still
    # find the folder; installed, only `vtcaps_pipeline` exists, so the old name must not be used.
    old = []
    for top in ("vtcaps_tf", "pipeline", "tests", "benchmarks", "tools"):
        for dirpath, _, filenames in os.walk(os.path.join(ig.ROOT, top)):
            for name in (n for n in filenames if n.endswith(".py")):
                path = os.path.join(dirpath, name)
                with open(path) as f:
                    text = f.read()
                for node in ast.walk(ast.parse(text, path)):
                    names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                             [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                             else [])
                    old += [f"{path}:{node.lineno}" for n in names if n.split(".")[0] == "pipeline"]
                # module paths in strings: subprocess command lines, importlib, Beam's worker modules
                old += [f"{path}: {m.group(0)}" for m in re.finditer(r"[\"'](-m )?pipeline\.\w+", text)]
    assert not old, "old package name `pipeline` used:\n" + "\n".join(old)


def test_pyproject_installs_every_package_under_its_import_name():
    # pyproject.toml lists the packages one by one (pipeline/ maps to vtcaps_pipeline), so a new
    # subpackage missing from the list would be left out of an installed wheel.
    import tomllib

    with open(os.path.join(ig.ROOT, "pyproject.toml"), "rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"vtcaps_pipeline": "pipeline"}
    found = {m for m, path in ig.module_files().items() if path.endswith("__init__.py")}
    assert set(setuptools["packages"]) == found


def _tree(root, files: dict):
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))


def test_the_check_finds_upward_imports_absolute_relative_and_lazy(tmp_path):
    _tree(tmp_path, {
        "vtcaps_tf/__init__.py": "",
        "vtcaps_tf/layers/__init__.py": "",
        "vtcaps_tf/layers/a.py": "from ..models import m\n",  # relative, upward
        "vtcaps_tf/layers/b.py": "def f():\n    import vtcaps_tf.serving.s\n",  # lazy, upward
        "vtcaps_tf/layers/c.py": "from vtcaps_tf.layers import a\nimport numpy\n",  # same layer, outside
        "vtcaps_tf/models/__init__.py": "",
        "vtcaps_tf/models/m.py": "from vtcaps_tf.layers.a import thing\n",  # downward
        "vtcaps_tf/serving/__init__.py": "",
        "vtcaps_tf/serving/s.py": "",
        "pipeline/__init__.py": "",
    })
    graph = ig.import_graph(str(tmp_path))
    assert graph["vtcaps_tf.layers.a"] == {"vtcaps_tf.models.m"}  # the module, not its package
    assert graph["vtcaps_tf.layers.b"] == {"vtcaps_tf.serving.s"}
    assert graph["vtcaps_tf.layers.c"] == {"vtcaps_tf.layers.a"}
    assert graph["vtcaps_tf.models.m"] == {"vtcaps_tf.layers.a"}
    assert ig.upward_imports(graph) == [
        ("vtcaps_tf.layers.a", "blocks", "vtcaps_tf.models.m", "models"),
        ("vtcaps_tf.layers.b", "blocks", "vtcaps_tf.serving.s", "serving"),
    ]


def test_the_project_has_no_import_cycle():
    cycles = ig.import_cycles(ig.import_graph())
    assert not cycles, "import cycles:\n" + "\n".join("  " + " <-> ".join(c) for c in cycles)


def test_the_check_finds_a_cycle_within_a_layer_lazy_imports_included(tmp_path):
    _tree(tmp_path, {
        "vtcaps_tf/__init__.py": "",
        "vtcaps_tf/train/__init__.py": "",
        "vtcaps_tf/train/fit.py": "def main():\n    from vtcaps_tf.train import launcher\n",
        "vtcaps_tf/train/launcher.py": "from vtcaps_tf.train.worker import THREADS\n",
        "vtcaps_tf/train/worker.py": "def f():\n    from vtcaps_tf.train import fit\n",
        "vtcaps_tf/train/setup.py": "from vtcaps_tf.train import worker\n",  # into the cycle, not in it
        "pipeline/__init__.py": "",
    })
    graph = ig.import_graph(str(tmp_path))
    assert ig.upward_imports(graph) == []
    assert ig.import_cycles(graph) == [
        ["vtcaps_tf.train.fit", "vtcaps_tf.train.launcher", "vtcaps_tf.train.worker"]]
    assert ig.import_cycles({"a": {"b"}, "b": set()}) == []


def test_a_module_outside_every_layer_is_named():
    with pytest.raises(KeyError, match="vtcaps_tf.newthing"):
        ig.layer_of("vtcaps_tf.newthing")


def test_dot_output_lists_layers_and_edges():
    dot = ig.to_dot({"vtcaps_tf.layers.a": {"vtcaps_tf.errors"}, "vtcaps_tf.errors": set()})
    assert 'subgraph "cluster_blocks"' in dot and '"vtcaps_tf.layers.a" -> "vtcaps_tf.errors";' in dot
