"""Hostile input: a served record whose JPEG frames say they are larger than the model's crop is
refused from the headers, before any decoding, and the server's memory does not move (measured:
its peak RSS); SIGTERM drains the REST and gRPC requests in flight, then `vtcaps serve` exits 0."""

import base64
import concurrent.futures
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import requests

import toy_model
from grpc_helpers import grpc_predict
from vtcaps_tf.serving.errors import ServingError
from vtcaps_tf.serving.frame_guard import check_records, jpeg_size

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOMB_SIDE = 6000


def _jpeg(height, width, **params):
    flags = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if params.get("progressive") else []
    return cv2.imencode(".jpg", np.full((height, width, 3), 90, np.uint8), flags)[1].tobytes()


@pytest.mark.parametrize("height,width,progressive", [(16, 16, False), (112, 96, False), (48, 40, True)])
def test_jpeg_size_reads_the_frame_header(height, width, progressive):
    assert jpeg_size(_jpeg(height, width, progressive=progressive)) == (height, width)


def test_a_record_with_a_frame_over_the_crop_or_no_jpeg_is_refused():
    crops = np.zeros((toy_model.M, toy_model.S, toy_model.S, 3), np.uint8)
    good = toy_model.CONTRACT.example(crops, np.zeros((toy_model.M, 68, 2), np.float32), 2)
    check_records([good], toy_model.S)  # crops of the model's side pass
    from tensorflow.core.example import example_pb2

    for frame, words in [(_jpeg(toy_model.S + 1, toy_model.S), "17 JPEG is larger"),
                         (b"GIF89a....", "not a JPEG"), (_jpeg(40, 40)[:30], "not a JPEG")]:
        example = example_pb2.SequenceExample.FromString(good)
        example.feature_lists.feature_list["frames"].feature[5].bytes_list.value[0] = frame
        with pytest.raises(ServingError, match=words) as err:
            check_records([good, example.SerializeToString()], toy_model.S)
        assert err.value.code == "INVALID_ARGUMENT" and "example 1, frame 5" in err.value.message


def _peak_rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) * 1024


def _start_serve(base, *flags):
    proc = subprocess.Popen([sys.executable, "-m", "vtcaps_tf.cli.main", "serve", "--model-base-path", base,
                             "--model-name", "toy", "--rest-port", "0", "--grpc-port", "0", *flags],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    rest = grpc_port = None
    deadline = time.time() + 120
    while rest is None and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"gRPC API at 127\.0\.0\.1:(\d+)", line)
        grpc_port = int(m.group(1)) if m else grpc_port
        m = re.search(r"REST API at (http://\S+)", line)
        rest = m.group(1) if m else None
    assert rest and grpc_port, "vtcaps serve did not start"
    return proc, rest, grpc_port


@pytest.mark.slow
def test_decompression_bomb_refused_without_memory_spike_and_sigterm_drains(toy_base_path, tmp_path):
    params = tmp_path / "batching.config"
    # Requests wait up to 1.5 s for a batch to fill: they are in flight when SIGTERM comes.
    params.write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 1500000 }\n")
    proc, rest, grpc_port = _start_serve(toy_base_path, "--enable_batching", "--batching_parameters_file",
                                         str(params), "--drain-timeout-seconds", "20")
    try:
        # The record holds the long window (M frames), every frame 6000x6000: decoded, the window
        # alone is M * 6000 * 6000 * 3 bytes (864 MB for M = 8).
        bomb_frame = _jpeg(BOMB_SIDE, BOMB_SIDE)
        good = toy_model.CONTRACT.example(np.zeros((toy_model.M, toy_model.S, toy_model.S, 3), np.uint8),
                                          np.zeros((toy_model.M, 68, 2), np.float32), toy_model.CONTRACT.before)
        from tensorflow.core.example import example_pb2

        example = example_pb2.SequenceExample.FromString(good)
        for feature in example.feature_lists.feature_list["frames"].feature:
            feature.bytes_list.value[0] = bomb_frame
        bomb = example.SerializeToString()
        decoded_window = toy_model.M * BOMB_SIDE * BOMB_SIDE * 3
        before = _peak_rss_bytes(proc.pid)
        body = {"signature_name": "serve_examples", "instances": [{"b64": base64.b64encode(bomb).decode()}]}
        r = requests.post(f"{rest}/v1/models/toy:predict", json=body, timeout=60)
        assert r.status_code == 400 and "larger than the model's 16x16 face crop" in r.json()["error"]
        growth = _peak_rss_bytes(proc.pid) - before
        assert growth < decoded_window / 8, f"peak RSS grew {growth / 2**20:.0f} MB"

        # SIGTERM with two REST and one gRPC request waiting in the batch queue.
        x = toy_model.random_inputs(1, seed=5)
        rest_body = {"inputs": {k: v.tolist() for k, v in x.items()}}
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(requests.post, f"{rest}/v1/models/toy:predict", json=rest_body, timeout=60)
                       for _ in range(2)]
            futures.append(pool.submit(grpc_predict, grpc_port, "toy", x))
            time.sleep(0.5)
            assert not any(f.done() for f in futures)  # still waiting for their batch
            proc.send_signal(signal.SIGTERM)
            want = toy_model.reference(x)["probabilities"]
            for f in futures[:2]:
                r = f.result(30)
                assert r.status_code == 200, r.text
                np.testing.assert_allclose(r.json()["outputs"]["probabilities"], want, atol=1e-5)
            np.testing.assert_allclose(futures[2].result(30)[0]["probabilities"], want, atol=1e-5)
        assert proc.wait(timeout=30) == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{rest}/v1/models/toy", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
