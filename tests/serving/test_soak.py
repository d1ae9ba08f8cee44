"""The soak of `benchmarks/serving_load.py`, shortened: `vtcaps serve` (batching on) under
concurrent REST clients while a new version of the toy model is published halfway (staged in a
hidden folder with its warm-up file, then renamed into place, as `vtcaps export` does): no
request fails, the first request to the new version is no slower than twice a warm one (it was
warmed up before it became AVAILABLE), and the server's RSS stays within 10%. The benchmark runs
the same soak for 10 minutes on a real export."""

import os
import shutil

import numpy as np
import pytest

import toy_model
from benchmarks.serving_load import soak, start_server, stop_server
from vtcaps_tf.apps.client import encode_inputs
from vtcaps_tf.export.warmup_requests import write_warmup_requests

pytestmark = pytest.mark.slow

SECONDS = 30


def test_short_soak_with_a_version_published_halfway(toy_base_path, tmp_path):
    base = tmp_path / "toy"
    shutil.copytree(toy_base_path, base)
    write_warmup_requests(str(base / "1"), toy_model.CONTRACT, with_teacher=True)
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 2000 }\n")

    def publish():
        staged = str(base / ".tmp-2")
        toy_model.write_toy_saved_model(staged, bias=0.5)
        write_warmup_requests(staged, toy_model.CONTRACT, with_teacher=True)
        os.rename(staged, str(base / "2"))

    x = toy_model.random_inputs(1, seed=9)
    record = toy_model.CONTRACT.example(x["long_frames"][0], np.repeat(x["landmarks"][0], 2, axis=0),
                                        toy_model.CONTRACT.before)
    body = encode_inputs({"examples": np.array([record], dtype=object)}, "serve_examples")
    proc, url = start_server(str(base), "toy", "--file-system-poll-wait-seconds", "0.5", "--enable_batching",
                             "--batching_parameters_file", str(params))
    try:
        result = soak(url, "toy", body, SECONDS, 4, publish, proc.pid, 2)
    finally:
        status = stop_server(proc)
    assert status == 0
    assert result["failed"] == 0 and result["requests"] > 0, result
    assert result["first_over_warm"] <= 2.0, result
    assert abs(result["rss_change"]) <= 0.10, result
