"""Request batching with TF Serving's semantics: the Batcher on plain numpy functions (merging,
padding, queue full), the batching and monitoring config files, and a server with batching on
(the toy export's signatures over REST and gRPC, TF Serving's half_plus_two for classify and
regress): concurrent requests are merged into fewer calls and answer as unbatched ones do."""

import concurrent.futures
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, prediction_service_pb2_grpc, regression_pb2

import half_plus_two
import toy_model
from grpc_helpers import grpc_predict
from vtcaps_tf.errors import UsageError
from vtcaps_tf.serving.batching import Batcher
from vtcaps_tf.serving.config_protos import BatchingOptions, ConfigProtoError, read_batching_parameters
from vtcaps_tf.serving.errors import ServingError
from vtcaps_tf.serving.servables import ModelSpec
from vtcaps_tf.serving.server import ModelServer, ServerConfig, check_config


class Recorder:
    """y = 2x + 1 per row, recording the inputs of every call."""

    def __init__(self, gate=None):
        self.calls = []
        self.gate = gate

    def __call__(self, inputs):
        self.calls.append({k: v.copy() for k, v in inputs.items()})
        if self.gate is not None:
            self.gate.wait(10)
        return {"y": inputs["x"] * 2.0 + 1.0}


def _concurrently(fn, args, workers=None):
    barrier = threading.Barrier(len(args))

    def go(a):
        barrier.wait()
        return fn(a)

    with concurrent.futures.ThreadPoolExecutor(workers or len(args)) as pool:
        return list(pool.map(go, args))


def test_concurrent_tasks_merge_into_one_call_and_get_their_own_rows():
    fn = Recorder()
    batcher = Batcher(fn, BatchingOptions(max_batch_size=8, batch_timeout_micros=2_000_000,
                                          num_batch_threads=1))
    try:
        xs = [np.full((1, 3), float(i), np.float32) for i in range(8)]
        outs = _concurrently(lambda x: batcher.run({"x": x})["y"], xs)
    finally:
        batcher.stop()
    assert len(fn.calls) == 1 and fn.calls[0]["x"].shape == (8, 3)  # full batch: no timeout wait
    for x, y in zip(xs, outs):
        np.testing.assert_array_equal(y, x * 2 + 1)


def test_allowed_batch_sizes_pad_by_repeating_the_first_row_and_trim_the_outputs():
    fn = Recorder()
    batcher = Batcher(fn, BatchingOptions(max_batch_size=8, allowed_batch_sizes=(4, 8), num_batch_threads=1))
    try:
        x = np.arange(6, dtype=np.float32).reshape(3, 2)
        y = batcher.run({"x": x})["y"]
    finally:
        batcher.stop()
    np.testing.assert_array_equal(fn.calls[0]["x"], np.array([[0, 1], [2, 3], [4, 5], [0, 1]], np.float32))
    np.testing.assert_array_equal(y, x * 2 + 1)


def test_variable_length_inputs_are_padded_with_their_first_element():
    fn = Recorder()
    batcher = Batcher(fn, BatchingOptions(max_batch_size=4, batch_timeout_micros=2_000_000,
                                          num_batch_threads=1, pad_variable_length_inputs=True))
    try:
        short = np.array([[7.0, 8.0]], np.float32)
        long = np.array([[1.0, 2.0, 3.0]], np.float32)
        outs = _concurrently(lambda x: batcher.run({"x": x})["y"], [short, long, long, long])
    finally:
        batcher.stop()
    assert len(fn.calls) == 1
    merged = fn.calls[0]["x"]
    assert merged.shape == (4, 3)
    assert [7.0, 8.0, 7.0] in merged.tolist()  # padded with its first value, 7
    assert [1.0, 2.0, 3.0] in merged.tolist()
    assert outs[0].tolist() == [[15.0, 17.0, 15.0]]


def test_full_queue_answers_unavailable_at_once_and_too_large_a_task_is_refused():
    gate = threading.Event()
    fn = Recorder(gate)
    batcher = Batcher(fn, BatchingOptions(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1))
    try:
        pool = concurrent.futures.ThreadPoolExecutor(2)
        running = pool.submit(batcher.run, {"x": np.zeros((1, 1), np.float32)})
        while not fn.calls:  # the first task is in the function, holding the only thread
            time.sleep(0.01)
        queued = pool.submit(batcher.run, {"x": np.ones((1, 1), np.float32)})
        while not batcher._batches:
            time.sleep(0.01)
        with pytest.raises(ServingError) as err:
            batcher.run({"x": np.ones((1, 1), np.float32)})
        assert err.value.code == "UNAVAILABLE" and err.value.http_status == 503
        with pytest.raises(ServingError) as err:
            batcher.run({"x": np.ones((2, 1), np.float32)})
        assert err.value.code == "INVALID_ARGUMENT"
        gate.set()
        assert running.result(10)["y"].tolist() == [[1.0]] and queued.result(10)["y"].tolist() == [[3.0]]
    finally:
        gate.set()
        batcher.stop()


def test_batching_parameters_file_in_tf_servings_text_format(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 1000 }\n"
                    "max_enqueued_batches { value: 3 }\nnum_batch_threads { value: 2 }\n"
                    "allowed_batch_sizes: 8\nallowed_batch_sizes: 16\npad_variable_length_inputs: true\n")
    assert read_batching_parameters(str(path)) == BatchingOptions(16, 1000, 3, 2, "batch_threads", (8, 16), True)
    path.write_text("max_batch_size { value: 16 }\nallowed_batch_sizes: 8\n")  # last must be 16
    with pytest.raises(ConfigProtoError, match="max_batch_size"):
        read_batching_parameters(str(path))
    path.write_text("max_batch_size: 16\n")  # a wrapper message, not a scalar
    with pytest.raises(ConfigProtoError, match="not a BatchingParameters"):
        read_batching_parameters(str(path))
    # The file without --enable_batching is an error, as in TF Serving.
    with pytest.raises(UsageError, match="needs --enable_batching"):
        check_config(ServerConfig(batching_parameters_file=str(path)))


# --- a server with batching on


@pytest.fixture(scope="module")
def batching_server(toy_base_path, tmp_path_factory):
    params = tmp_path_factory.mktemp("batching") / "batching.config"
    params.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 100000 }\n"
                      "num_batch_threads { value: 1 }\n")
    server = ModelServer([ModelSpec("toy", toy_base_path)],
                         ServerConfig(rest_port=0, grpc_port=0, poll_wait_seconds=0, enable_batching=True,
                                      batching_parameters_file=str(params)))
    server.start()
    yield server
    server.stop()


def _batcher(server, signature):
    return server.manager.get("toy").signatures[signature].batcher


def test_rest_and_grpc_requests_are_merged_and_answer_as_unbatched(batching_server, toy_in_process):
    inputs = [toy_model.random_inputs(1, seed=i) for i in range(8)]
    batcher = _batcher(batching_server, "serving_default")
    before = batcher.calls

    def ask(i):
        if i % 2:
            return grpc_predict(batching_server.grpc_port, "toy", inputs[i])[0]["probabilities"]
        body = {"inputs": {k: v.tolist() for k, v in inputs[i].items()}}
        r = requests.post(f"{batching_server.rest_url}/v1/models/toy:predict", json=body, timeout=60)
        assert r.status_code == 200, r.text
        return np.array(r.json()["outputs"]["probabilities"])

    outs = _concurrently(ask, list(range(8)))
    assert batcher.calls - before < 8  # merged
    for x, y in zip(inputs, outs):
        np.testing.assert_allclose(y, toy_in_process(x)["probabilities"], atol=1e-6)


def test_serve_examples_requests_are_merged(batching_server, toy_in_process):
    inputs = [toy_model.random_inputs(1, seed=20 + i) for i in range(6)]
    records = [toy_model.CONTRACT.example(np.concatenate([x["long_frames"][0]]),
                                          np.repeat(x["landmarks"][0], 2, axis=0), toy_model.CONTRACT.before)
               for x in inputs]
    batcher = _batcher(batching_server, "serve_examples")
    before = batcher.calls
    outs = _concurrently(lambda r: grpc_predict(batching_server.grpc_port, "toy", {"examples": np.array([r])},
                                                "serve_examples")[0]["probabilities"], records)
    assert batcher.calls - before < 6
    alone = toy_in_process.loaded.signatures["serve_examples"]
    for merged, record in zip(outs, records):
        single = alone(examples=tf.constant([record]))["probabilities"].numpy()
        np.testing.assert_allclose(merged, single, atol=1e-6)


def test_a_full_queue_answers_503_over_rest_and_unavailable_over_grpc(toy_base_path, tmp_path):
    params = tmp_path / "batching.config"
    # One batch may wait (for 1.5 s, not full); a second one does not fit the queue.
    params.write_text("max_batch_size { value: 4 }\nbatch_timeout_micros { value: 1500000 }\n"
                      "max_enqueued_batches { value: 1 }\nnum_batch_threads { value: 1 }\n")
    with ModelServer([ModelSpec("toy", toy_base_path)],
                     ServerConfig(rest_port=0, grpc_port=0, poll_wait_seconds=0, warmup=False,
                                  enable_batching=True, batching_parameters_file=str(params))) as server:
        three = toy_model.random_inputs(3)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(grpc_predict, server.grpc_port, "toy", three)
            while not _batcher(server, "serving_default")._batches:
                time.sleep(0.01)
            t0 = time.perf_counter()
            body = {"inputs": {k: v.tolist() for k, v in three.items()}}
            r = requests.post(f"{server.rest_url}/v1/models/toy:predict", json=body, timeout=60)
            assert r.status_code == 503 and "full" in r.json()["error"]
            with pytest.raises(grpc.RpcError) as err:
                grpc_predict(server.grpc_port, "toy", three)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            refused_within = time.perf_counter() - t0
            assert not waiting.done() or refused_within < 1.5  # refused while the batch still waited
            np.testing.assert_allclose(waiting.result(30)[0]["probabilities"],
                                       toy_model.reference(three)["probabilities"], atol=1e-5)


def test_classify_and_regress_on_tf_servings_test_model_are_batched(tmp_path):
    half_plus_two.write_half_plus_two(str(tmp_path))
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 300000 }\n"
                      "num_batch_threads { value: 1 }\n")
    with ModelServer([ModelSpec("default", str(tmp_path))],
                     ServerConfig(rest_port=0, grpc_port=0, poll_wait_seconds=0, enable_batching=True,
                                   batching_parameters_file=str(params))) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        servable = server.manager.get("default")
        before = {k: servable.signatures[k].batcher.calls for k in ("classify_x_to_y", "regress_x_to_y")}

        def ask(i):
            x = float(i)
            if i % 2:
                req = classification_pb2.ClassificationRequest()
                req.model_spec.name, req.model_spec.signature_name = "default", "classify_x_to_y"
                req.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
                return x, stub.Classify(req, timeout=60).result.classifications[0].classes[0].score
            req = regression_pb2.RegressionRequest()
            req.model_spec.name, req.model_spec.signature_name = "default", "regress_x_to_y"
            req.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
            return x, stub.Regress(req, timeout=60).result.regressions[0].value

        answers = _concurrently(ask, list(range(12)))
        for x, y in answers:
            assert y == pytest.approx(half_plus_two.expected(x), abs=1e-6)
        merged = sum(servable.signatures[k].batcher.calls - v for k, v in before.items())
        assert merged < 12


def test_a_stopped_batcher_runs_each_call_alone():
    # A version being unloaded stops its batchers; requests that still hold it are answered.
    fn = Recorder()
    batcher = Batcher(fn, BatchingOptions(max_batch_size=4, allowed_batch_sizes=(4,), num_batch_threads=1))
    batcher.stop()
    x = np.array([[1.0], [2.0]], np.float32)
    assert batcher.run({"x": x})["y"].tolist() == [[3.0], [5.0]]
    assert len(fn.calls) == 1 and fn.calls[0]["x"].shape == (2, 1)  # not padded: not batched
