"""Test session setup: two logical CPU devices, so MirroredStrategy runs with two replicas; fixtures
that several modules only read are built once per session."""

import os
from types import SimpleNamespace

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The tests run TensorFlow with the settings of the `vtcaps` commands (oneDNN kernels on).
from vtcaps_tf.cli.tensorflow_setup import tensorflow_defaults  # noqa: E402  (imports no TensorFlow)

tensorflow_defaults()


def pytest_configure(config):
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    except RuntimeError:
        pass  # already initialised by an earlier plugin; tests needing two replicas check this


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """An untrained `tiny` model with three classes and its export as version 1 of a base path.

    Building and exporting it takes about a minute on 2 cores; tests only read it (a test that
    writes versions copies it first)."""
    from vtcaps_tf.export.saved_model import export_model
    from vtcaps_tf.models import build_model

    classes = ["anger", "happy", "sad"]
    model = build_model("tiny", class_names=classes, num_classes=len(classes))
    base = str(tmp_path_factory.mktemp("tiny_export") / "fer")
    return SimpleNamespace(model=model, classes=classes, base=base, path=export_model(model, base))
