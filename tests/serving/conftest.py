"""Fixtures: the toy SavedModel under a base path (and a teacher-free one with its TFLite model),
and one server (REST + gRPC on free loopback ports)
per test module."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import toy_model  # noqa: E402


@pytest.fixture(scope="module")
def toy_base_path(tmp_path_factory):
    base = tmp_path_factory.mktemp("toy_models")
    toy_model.write_toy_saved_model(str(base / "1"), bias=0.0)
    return str(base)


@pytest.fixture(scope="module")
def toy_tflite_base_path(tmp_path_factory):
    """The teacher-free toy as version 1 with its fp32 `model.tflite` beside the SavedModel."""
    from vtcaps_tf.export.tflite import write_tflite

    base = tmp_path_factory.mktemp("toy_tflite_models")
    write_tflite(toy_model.write_toy_saved_model(str(base / "1"), bias=0.0, with_teacher=False), "fp32")
    return str(base)


@pytest.fixture(scope="module")
def toy_server(toy_base_path):
    from vtcaps_tf.serving.servables import ModelSpec
    from vtcaps_tf.serving.server import ModelServer, ServerConfig

    server = ModelServer([ModelSpec("toy", toy_base_path)],
                         ServerConfig(host="127.0.0.1", rest_port=0, grpc_port=0,
                                      poll_wait_seconds=0.2, max_request_bytes=8 << 20))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def toy_in_process(toy_base_path):
    """The toy model's serving_default called directly (no server)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(os.path.join(toy_base_path, "1"))
    fn = loaded.signatures["serving_default"]

    def call(inputs):
        return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}

    call.loaded = loaded
    return call
