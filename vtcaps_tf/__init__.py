"""vtcaps_tf: VT-3DCapsNet (3D ResNet + AU attention + capsules + temporal pyramid) in Keras 3.

Importing the package is cheap: it does not import TensorFlow, so the `vtcaps` command starts
fast. The custom Keras objects (layers, models, losses) register themselves when
`vtcaps_tf.models` or `vtcaps_tf.layers` is imported, which every loading path does
(`vtcaps_tf.models.load_trained_model` included); a bare `keras.saving.load_model` of a `.keras`
file needs `import vtcaps_tf.models` first. `vtcaps_tf.layers` and `.models` are
also reachable as attributes of the package, imported on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# `vtcaps_tf.layers` and `vtcaps_tf.models` load TensorFlow: imported on first attribute use, so
# that `import vtcaps_tf` stays light.
_LAZY_SUBMODULES = ("layers", "models")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY_SUBMODULES))
