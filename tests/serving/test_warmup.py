"""The warm-up file (`assets.extra/tf_serving_warmup_requests`): written from the input contract,
read back by TensorFlow's own `TFRecordDataset` and `PredictionLog` parsing (as TF Serving reads
it), replayed by `vtcaps serve` before a version is AVAILABLE; without it, a zero batch through
every signature, `serve_examples` included."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

import toy_model
from vtcaps_tf.export.warmup_requests import WARMUP_FILE, write_warmup_requests
from vtcaps_tf.serving.metrics import ServingMetrics
from vtcaps_tf.serving.servables import ModelManager, ModelSpec
from vtcaps_tf.serving.warmup import warm_up


def _read_back(path):
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]


def _runs(metrics, signature):
    samples = [s for f in metrics.registry.collect() for s in f.samples]
    return sum(s.value for s in samples if s.name == ":tensorflow:serving:runtime_latency_count"
               and s.labels["API"] == signature)


def _manager(base, iterations=1):
    metrics = ServingMetrics()

    def warmup(servable):
        warm_up(servable, iterations, metrics)

    return ModelManager([ModelSpec("toy", base)], poll_wait_seconds=0, warmup=warmup, metrics=metrics), metrics


@pytest.fixture()
def toy_with_warmup_file(toy_base_path, tmp_path):
    base = tmp_path / "toy"
    shutil.copytree(toy_base_path, base)
    write_warmup_requests(str(base / "1"), toy_model.CONTRACT, with_teacher=True)
    return str(base)


def test_the_warmup_file_reads_back_as_prediction_logs_of_both_signatures(toy_with_warmup_file):
    logs = _read_back(os.path.join(toy_with_warmup_file, "1", WARMUP_FILE))
    requests = {log.predict_log.request.model_spec.signature_name: log.predict_log.request for log in logs}
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log", "predict_log"]
    default = requests["serving_default"]
    n, m, s = toy_model.N, toy_model.M, toy_model.S
    assert tf.make_ndarray(default.inputs["frames"]).shape == (1, n, s, s, 3)
    assert tf.make_ndarray(default.inputs["frames"]).dtype == np.uint8
    assert tf.make_ndarray(default.inputs["landmarks"]).shape == (1, n, 68, 2)
    assert tf.make_ndarray(default.inputs["long_frames"]).shape == (1, m, s, s, 3)
    (record,) = tf.make_ndarray(requests["serve_examples"].inputs["examples"])
    example = tf.train.SequenceExample.FromString(record)
    assert len(example.feature_lists.feature_list["frames"].feature) == m  # the long window stored


def test_serve_replays_the_file_before_the_version_is_available(toy_with_warmup_file):
    manager, metrics = _manager(toy_with_warmup_file, iterations=3)
    manager.start()
    try:
        assert manager.model("toy").versions == [1]
        # Each of the two records replayed 3 times; nothing else ran.
        assert _runs(metrics, "serving_default") == 3
        assert _runs(metrics, "serve_examples") == 3
        assert _runs(metrics, "echo") == 0
    finally:
        manager.stop()


def test_without_the_file_a_zero_batch_warms_every_signature_up(toy_base_path):
    manager, metrics = _manager(toy_base_path)
    manager.start()
    try:
        assert _runs(metrics, "serving_default") == 1
        assert _runs(metrics, "serve_examples") == 1  # a zero clip record
        assert _runs(metrics, "echo") == 0  # a string input of any shape: nothing to make up
    finally:
        manager.stop()


def test_a_warmup_record_that_fails_fails_the_load(toy_base_path, tmp_path):
    base = tmp_path / "toy"
    shutil.copytree(toy_base_path, base)
    bad = prediction_log_pb2.PredictionLog()
    bad.predict_log.request.model_spec.signature_name = "serving_default"
    bad.predict_log.request.inputs["frames"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 2), np.uint8)))
    os.makedirs(base / "1" / "assets.extra")
    with tf.io.TFRecordWriter(str(base / "1" / WARMUP_FILE)) as writer:
        writer.write(bad.SerializeToString())
    manager, _ = _manager(str(base))
    manager.start()
    try:
        assert manager.model("toy").versions == []
        (version, status), = manager.model("toy").status()
        assert (version, status.state) == (1, "END") and "warm-up" in status.error_message
    finally:
        manager.stop()


@pytest.mark.slow
def test_the_real_export_carries_the_file_and_serve_replays_it(tiny_export):
    path = os.path.join(tiny_export.path, WARMUP_FILE)
    logs = _read_back(path)
    cfg = tiny_export.model.config
    frames = tf.make_ndarray(logs[0].predict_log.request.inputs["frames"])
    assert frames.shape == (1, cfg.clip_frames, cfg.image_size, cfg.image_size, 3)
    assert "long_frames" not in logs[0].predict_log.request.inputs  # the teacher-free export
    manager, metrics = _manager(tiny_export.base)
    manager.start()
    try:
        assert manager.model("toy").versions == [1]
        assert _runs(metrics, "serving_default") == 1 and _runs(metrics, "serve_examples") == 1
    finally:
        manager.stop()
