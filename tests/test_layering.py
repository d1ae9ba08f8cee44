"""No module of vtcaps_tf/ or pipeline/ imports a higher layer (tools/import_graph.py defines them:
base < blocks (face, data, layers, losses, metrics) < models < training/export < serving <
pipeline < cli). Imports inside functions count too."""

import os
import textwrap

import pytest

from tools import import_graph as ig


def test_every_module_has_a_layer_and_none_imports_upward():
    graph = ig.import_graph()
    assert "vtcaps_tf.models.vt3dcapsnet" in graph and "pipeline.runner" in graph  # walked both trees
    for module in graph:
        ig.layer_of(module)  # KeyError names a module missing from LAYERS
    bad = ig.upward_imports(graph)
    assert not bad, "upward imports:\n" + "\n".join(
        f"  {m} ({lm}) imports {t} ({lt})" for m, lm, t, lt in bad)


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
    assert graph["vtcaps_tf.layers.a"] == {"vtcaps_tf.models", "vtcaps_tf.models.m"}
    assert graph["vtcaps_tf.layers.b"] == {"vtcaps_tf.serving.s"}
    assert graph["vtcaps_tf.layers.c"] == {"vtcaps_tf.layers", "vtcaps_tf.layers.a"}
    assert graph["vtcaps_tf.models.m"] == {"vtcaps_tf.layers.a"}
    assert ig.upward_imports(graph) == [
        ("vtcaps_tf.layers.a", "blocks", "vtcaps_tf.models", "models"),
        ("vtcaps_tf.layers.a", "blocks", "vtcaps_tf.models.m", "models"),
        ("vtcaps_tf.layers.b", "blocks", "vtcaps_tf.serving.s", "serving"),
    ]


def test_a_module_outside_every_layer_is_named():
    with pytest.raises(KeyError, match="vtcaps_tf.newthing"):
        ig.layer_of("vtcaps_tf.newthing")


def test_dot_output_lists_layers_and_edges():
    dot = ig.to_dot({"vtcaps_tf.layers.a": {"vtcaps_tf.errors"}, "vtcaps_tf.errors": set()})
    assert 'subgraph "cluster_blocks"' in dot and '"vtcaps_tf.layers.a" -> "vtcaps_tf.errors";' in dot
