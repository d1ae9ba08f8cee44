"""REST serving overhead: latency and throughput of `:predict` for one clip against the same
SavedModel called in process, measured in the same run. Prints one JSON line.

The model (`small` preset by default, untrained weights: speed does not depend on them) is exported
with `export_model` (the default, teacher-free export), served by `vtcaps serve` in a child
process, and asked over a keep-alive connection per client with the body `vtcaps predict
--server` sends: one schema-2 SequenceExample (the clip's JPEG face crops and landmarks) as
base64 to `serve_examples`. For comparison, the same clip as a columnar JSON tensor body to
`serving_default` (the body predict sent before) is timed too. The in-process figure is the same
SavedModel's `serving_default` loaded and called in this process (what `vtcaps predict
--saved-model` does). With 1 client, in-process, REST (examples), REST (tensor JSON) and gRPC
(TF Serving's stub, binary TensorProtos) calls alternate, so that load from other processes on the
machine falls on all alike; then 8 REST clients at once (examples), against 8 in-process threads.
The crops are the sample photo's face (a real face compresses as real crops do), shifted a pixel
or two per frame.

    python benchmarks/serving.py [--preset small] [--requests 20] [--clients 8]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.matmul import matmul_gflops  # noqa: E402


def log(msg):
    print(f"[serving bench] {msg}", file=sys.stderr, flush=True)


def percentile(values, q):
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def clip_window(contract, frames, seed=0):
    """One clip's stored window as `vtcaps predict` holds it: `frames` face crops uint8
    [T, S, S, 3] (the sample photo's face, shifted per frame) and landmarks [T, 68, 2]."""
    import cv2
    import matplotlib.cbook

    rng = np.random.default_rng(seed)
    s = contract.image_size
    bgr = cv2.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    h, w = bgr.shape[:2]
    face = cv2.resize(bgr[h // 10:h // 10 + w // 2, w // 4:w // 4 + w // 2], (s + 4, s + 4))[..., ::-1]
    crops = np.stack([face[t % 3:t % 3 + s, (2 * t) % 4:(2 * t) % 4 + s] for t in range(frames)])
    landmarks = rng.uniform(0.2, 0.8, (frames, 68, 2)).astype(np.float32)
    return np.ascontiguousarray(crops), landmarks


def start_server(base_path, name):
    cmd = [sys.executable, "-m", "vtcaps_tf.cli.main", "serve", "--model-base-path", base_path,
           "--model-name", name, "--rest-port", "0", "--grpc-port", "0",
           "--file-system-poll-wait-seconds", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    deadline, grpc_address = time.time() + 600, None
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"gRPC API at (\S+)", line)
        grpc_address = m.group(1) if m else grpc_address
        m = re.search(r"REST API at (http://\S+)", line)
        if m:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
            return proc, m.group(1), grpc_address
    proc.kill()
    raise RuntimeError("vtcaps serve did not start")


def rest_run(url, name, body, clients, requests_per_client):
    from vtcaps_tf.apps.client import ServingClient

    latencies, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def worker():
        with ServingClient(url, name) as client:
            client.predict({}, body=body)  # open the connection (not timed)
            barrier.wait()
            for _ in range(requests_per_client):
                t0 = time.perf_counter()
                try:
                    client.predict({}, body=body)
                except Exception as err:  # noqa: BLE001 - counted and reported
                    errors.append(repr(err))
                    continue
                with lock:
                    latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": len(latencies), "errors": len(errors),
            "p50_ms": round(percentile(latencies, 50), 2), "p99_ms": round(percentile(latencies, 99), 2),
            "throughput_rps": round(len(latencies) / wall, 3)}


def grpc_predictor(address, name, inputs):
    """A no-argument callable doing one gRPC Predict with TF Serving's own stub."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1),
                                                      ("grpc.max_receive_message_length", -1)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return lambda: stub.Predict(request, timeout=600)


def local_threads(signature, inputs, threads, calls_per_thread):
    latencies = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def worker():
        barrier.wait()
        for _ in range(calls_per_thread):
            t0 = time.perf_counter()
            signature.run(inputs)
            with lock:
                latencies.append(time.perf_counter() - t0)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - t0
    return {"threads": threads, "calls": len(latencies), "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2), "throughput_cps": round(len(latencies) / wall, 3)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--requests", type=int, default=20, help="timed requests with 1 client")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests-per-client", type=int, default=4, help="with --clients at once")
    args = p.parse_args(argv)

    from vtcaps_tf.export.saved_model import export_model
    from vtcaps_tf.models import build_model
    from vtcaps_tf.apps.client import encode_inputs
    from vtcaps_tf.serving.servables import Servable
    from vtcaps_tf.apps.predict_models import EXAMPLES_SIGNATURE, clip_shape_from_inputs

    gflops_before = matmul_gflops()
    classes = ["anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"]
    model = build_model(args.preset, class_names=classes)
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "bench")
        log(f"exporting the {args.preset} model")
        version_dir = export_model(model, base)
        del model

        log("loading the SavedModel in process")
        servable = Servable("bench", 1, version_dir, warmup=False)
        signature = servable.signature("serving_default")
        # The contract as `vtcaps predict` reads it from the signature (no long_frames: M = N).
        contract = clip_shape_from_inputs({k: v.shape for k, v in signature.inputs.items()})
        crops, landmarks = clip_window(contract, contract.long_frames)
        window = contract.window_inputs(crops, landmarks, contract.before, with_teacher=False)
        inputs = {k: np.asarray(v)[None] for k, v in window.items()}
        for _ in range(2):
            signature.run(inputs)

        # What `vtcaps predict --server` sends: the clip as one record, base64 (RestModel).
        encode = []
        for _ in range(5):
            t0 = time.perf_counter()
            example = contract.example(crops, landmarks, contract.before)
            body = encode_inputs({"examples": np.array([example], dtype=object)}, EXAMPLES_SIGNATURE)
            encode.append(time.perf_counter() - t0)
        tensor_body = encode_inputs(inputs)  # the clip's pixels and landmarks as JSON numbers
        # The served model sees the record's JPEG-decoded crops: compare with those in process.
        decoded, _ = contract.parse_example(example, with_teacher=False)
        reference = signature.run({k: np.asarray(v)[None] for k, v in decoded.items()})
        from vtcaps_tf.serving import json_codec

        decode, decode_tensor = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            json_codec.loads(body)
            decode.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            json_codec.loads(tensor_body)
            decode_tensor.append(time.perf_counter() - t0)

        log("starting vtcaps serve")
        proc, url, grpc_address = start_server(base, "bench")
        try:
            from vtcaps_tf.apps.client import ServingClient

            with ServingClient(url, "bench") as client:
                served = client.predict({}, body=body)
                max_diff = float(np.abs(served["probabilities"] - reference["probabilities"]).max())
                client.predict({}, body=tensor_body)
                grpc_call = grpc_predictor(grpc_address, "bench", inputs)
                grpc_call()
                log(f"1 client: {args.requests} in-process, REST (examples, tensor JSON) and gRPC "
                    "calls, alternating")
                local, remote, remote_tensor, grpc_times = [], [], [], []
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    signature.run(inputs)
                    local.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    client.predict({}, body=body)
                    remote.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    client.predict({}, body=tensor_body)
                    remote_tensor.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    grpc_call()
                    grpc_times.append(time.perf_counter() - t0)
            one = {"clients": 1, "requests": len(remote), "errors": 0,
                   "p50_ms": round(percentile(remote, 50), 2), "p99_ms": round(percentile(remote, 99), 2),
                   "throughput_rps": round(len(remote) / sum(remote), 3)}
            log(f"REST, {args.clients} clients")
            many = rest_run(url, "bench", body, args.clients, args.requests_per_client)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        log(f"in process, {args.clients} threads")
        many_local = local_threads(signature, inputs, args.clients, args.requests_per_client)
        del servable, signature

    local_p50 = percentile(local, 50)
    ratio = one["p50_ms"] / local_p50
    pair_ratio = float(np.median(np.asarray(remote) / np.asarray(local)))
    print(json.dumps({
        "benchmark": "serving_rest_predict",
        "preset": args.preset,
        "export": "default (3D-CapsNet only, no long_frames)",
        "clip": {k: list(v.shape) for k, v in inputs.items()},
        "request_body_bytes": len(body),
        "request_body": "serve_examples, 1 SequenceExample (JPEG q95 crops + landmarks) as base64",
        "client_encode_p50_ms": round(percentile(encode, 50), 2),
        "json_decode_p50_ms": round(percentile(decode, 50), 2),
        "in_process_p50_ms": round(local_p50, 2),
        "in_process_p99_ms": round(percentile(local, 99), 2),
        "rest_1_client": one,
        "rest_tensor_json_body_bytes": len(tensor_body),
        "rest_tensor_json_decode_p50_ms": round(percentile(decode_tensor, 50), 2),
        "rest_tensor_json_1_client_p50_ms": round(percentile(remote_tensor, 50), 2),
        f"rest_{args.clients}_clients": many,
        f"in_process_{args.clients}_threads": many_local,
        "p50_ratio_rest_to_in_process": round(ratio, 4),
        "median_paired_ratio": round(pair_ratio, 4),
        f"throughput_ratio_rest_to_in_process_{args.clients}": round(
            many["throughput_rps"] / many_local["throughput_cps"], 4),
        "overhead_pct_1_client": round(100 * (ratio - 1), 2),
        "grpc_1_client_p50_ms": round(percentile(grpc_times, 50), 2),
        "grpc_p50_ratio_to_in_process": round(percentile(grpc_times, 50) / local_p50, 4),
        "goal_overhead_pct": 20,
        "goal_met": bool(ratio - 1 < 0.20),
        "max_abs_diff_rest_vs_in_process": max_diff,
        "matmul_2048_fp32_gflops": [round(gflops_before, 1), round(matmul_gflops(), 1)],
        "cpu_count": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
