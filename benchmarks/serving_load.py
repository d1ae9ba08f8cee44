"""`vtcaps serve` under load: clips/s and p50/p99 latency at 1, 4 and 16 concurrent REST clients,
for `tiny` and `small`, with request batching off and on, beside the same SavedModel called in
process at batch 1 and batch 8; then a soak: concurrent clients for `--soak-seconds` with a new
version exported in the middle (failed requests, the first request to the new version against
warm ones, the server's RSS over the run). Prints one JSON line.

Each client keeps one connection and sends what `vtcaps predict --server` sends: one clip as a
schema-2 SequenceExample (JPEG face crops + landmarks), base64, to `serve_examples`. The server
is `vtcaps serve` in a child process; the load generator runs on the same machine. The batching
run uses `--enable_batching` with the parameters in BATCHING (the file TF Serving would read).

    python benchmarks/serving_load.py [--presets tiny small] [--soak-seconds 600]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.matmul import matmul_gflops  # noqa: E402
from benchmarks.serving import clip_window, percentile, rest_run  # noqa: E402

CLASSES = ["anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"]
LEVELS = (1, 4, 16)
# One batch thread per core; a batch waits at most 5 ms for more clips.
BATCHING = ("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 5000 }\n"
            "max_enqueued_batches { value: 64 }\nnum_batch_threads { value: %d }\n")


def log(msg):
    print(f"[serving load] {msg}", file=sys.stderr, flush=True)


def start_server(base_path, name, *flags):
    """`vtcaps serve` on free ports: (process, REST url)."""
    cmd = [sys.executable, "-m", "vtcaps_tf.cli.main", "serve", "--model-base-path", base_path,
           "--model-name", name, "--rest-port", "0", "--grpc-port", "0", *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    deadline = time.time() + 600
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"REST API at (http://\S+)", line)
        if m:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
            return proc, m.group(1)
    proc.kill()
    raise RuntimeError("vtcaps serve did not start")


def stop_server(proc):
    proc.terminate()
    return proc.wait(timeout=120)


def rss_bytes(pid) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024


def request_body(contract, crops, landmarks) -> bytes:
    from vtcaps_tf.apps.client import encode_inputs
    from vtcaps_tf.apps.predict_models import EXAMPLES_SIGNATURE

    example = contract.example(crops, landmarks, contract.before)
    return encode_inputs({"examples": np.array([example], dtype=object)}, EXAMPLES_SIGNATURE), example


def model_request(model) -> tuple[bytes, bytes]:
    """`request_body` for one clip of `model`'s input contract: (REST body, its record)."""
    from vtcaps_tf.apps.predict_models import clip_shape_from_inputs

    contract = clip_shape_from_inputs({k: v.shape for k, v in model.contract.tensor_specs(None, False).items()})
    return request_body(contract, *clip_window(contract, contract.long_frames))


def version_states(client) -> dict[int, str]:
    """Version -> state of the client's model (its GET status)."""
    return {int(v["version"]): v["state"] for v in client.request("GET", client.base)["model_version_status"]}


def in_process(version_dir, example, batch, calls) -> dict:
    """serve_examples of the SavedModel in this process at `batch` records per call."""
    from vtcaps_tf.serving.servables import Servable

    signature = Servable("bench", 1, version_dir).signature("serve_examples")
    inputs = {"examples": np.array([example] * batch, dtype=object)}
    for _ in range(2):
        signature.run(inputs)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        signature.run(inputs)
        times.append(time.perf_counter() - t0)
    return {"batch": batch, "calls": calls, "p50_ms": round(percentile(times, 50), 2),
            "clips_per_s": round(batch * calls / sum(times), 2)}


def load_levels(url, body, requests_per_client) -> list[dict]:
    out = []
    for clients in LEVELS:
        per_client = requests_per_client if clients == 1 else max(8, 2 * requests_per_client // clients)
        run = rest_run(url, "bench", body, clients, per_client)
        run["clips_per_s"] = run.pop("throughput_rps")  # one clip per request
        run["p99_over_p50"] = round(run["p99_ms"] / run["p50_ms"], 3)
        out.append(run)
        log(f"  {clients:2d} clients: {run['clips_per_s']} clips/s, p50 {run['p50_ms']} ms, "
            f"p99 {run['p99_ms']} ms, {run['errors']} errors")
    return out


def soak(url, name, body, seconds, clients, publish, pid, new_version) -> dict:
    """`clients` clients ask without pause for `seconds`; halfway `publish()` writes version
    `new_version`. Returns the failures, the first request to the new version against the median
    of the 10 after it (from the same probe client, under the same load), and the server's RSS
    over the run (median of the first and of the last fifth, the first 5% left out as start-up)."""
    from vtcaps_tf.apps.client import ServingClient

    stop = threading.Event()
    ok, failures, rss = [0] * clients, [], []
    lock = threading.Lock()

    def client(i):
        with ServingClient(url, name) as c:
            while not stop.is_set():
                try:
                    c.predict({}, body=body)
                    ok[i] += 1
                except Exception as err:  # noqa: BLE001 - every failure is counted and reported
                    with lock:
                        failures.append(repr(err)[:200])

    def sample():
        while not stop.wait(0.5):
            rss.append((time.perf_counter() - t0, rss_bytes(pid)))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    threads.append(threading.Thread(target=sample))
    for t in threads:
        t.start()
    probe = {}
    try:
        time.sleep(seconds / 2)
        publish()
        published = time.perf_counter()
        with ServingClient(url, name) as status_client:
            while True:
                if version_states(status_client).get(new_version) == "AVAILABLE":
                    break
                time.sleep(0.05)
        available = time.perf_counter()
        with ServingClient(url, name, version=new_version) as c:
            times = []
            for _ in range(11):
                t = time.perf_counter()
                c.predict({}, body=body)
                times.append(time.perf_counter() - t)
        probe = {"load_seconds_after_publish": round(available - published, 2),
                 "first_ms": round(times[0] * 1000, 2),
                 "warm_p50_ms": round(statistics.median(times[1:]) * 1000, 2)}
        probe["first_over_warm"] = round(probe["first_ms"] / probe["warm_p50_ms"], 3)
        time.sleep(max(0.0, seconds - (time.perf_counter() - t0)))
    finally:
        stop.set()
        for t in threads:
            t.join()
    wall = time.perf_counter() - t0
    start = [r for t, r in rss if 0.05 * wall <= t <= 0.25 * wall]
    end = [r for t, r in rss if t >= 0.8 * wall]
    rss_start, rss_end = statistics.median(start), statistics.median(end)
    return {"seconds": round(wall, 1), "clients": clients, "requests": sum(ok), "failed": len(failures),
            "failures": failures[:5], **probe,
            "rss_start_mb": round(rss_start / 2**20, 1), "rss_end_mb": round(rss_end / 2**20, 1),
            "rss_change": round(rss_end / rss_start - 1, 4)}


def bench_preset(preset, tmp, requests_per_client, batch_threads) -> dict:
    from vtcaps_tf.export.saved_model import export_model
    from vtcaps_tf.models import build_model

    model = build_model(preset, class_names=CLASSES)
    base = os.path.join(tmp, preset)
    log(f"{preset}: exporting")
    version_dir = export_model(model, base)
    body, example = model_request(model)
    log(f"{preset}: in process, batch 1 and 8")
    local = [in_process(version_dir, example, 1, 24), in_process(version_dir, example, 8, 6)]
    params = os.path.join(tmp, "batching.config")
    with open(params, "w") as f:
        f.write(BATCHING % batch_threads)
    result = {"in_process": local}
    for mode, flags in (("batching_off", ()), ("batching_on", ("--enable_batching", "--batching_parameters_file",
                                                                params))):
        log(f"{preset}: vtcaps serve, {mode}")
        proc, url = start_server(base, "bench", "--file-system-poll-wait-seconds", "0", *flags)
        try:
            result[mode] = load_levels(url, body, requests_per_client)
        finally:
            stop_server(proc)
    off, on = result["batching_off"][-1], result["batching_on"][-1]
    result["speedup_16_clients"] = round(on["clips_per_s"] / off["clips_per_s"], 3)
    result["max_p99_over_p50"] = max(r["p99_over_p50"] for mode in ("batching_off", "batching_on")
                                     for r in result[mode])
    result["errors"] = sum(r["errors"] for mode in ("batching_off", "batching_on") for r in result[mode])
    return result, model, base, body


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "small"])
    p.add_argument("--requests-per-client", type=int, default=40,
                   help="requests of the 1-client level; the others send the same total, doubled")
    p.add_argument("--soak-seconds", type=float, default=600.0)
    p.add_argument("--soak-clients", type=int, default=4)
    args = p.parse_args(argv)
    batch_threads = os.cpu_count() or 1

    gflops_before = matmul_gflops()
    out = {"benchmark": "serving_load", "request": "serve_examples over REST, 1 clip per request (base64 "
           "SequenceExample)", "batching_parameters": BATCHING % batch_threads}
    with tempfile.TemporaryDirectory() as tmp:
        soak_args = None
        for preset in args.presets:
            out[preset], model, base, body = bench_preset(preset, tmp, args.requests_per_client, batch_threads)
            if soak_args is None:
                soak_args = (model, base, body)
        if args.soak_seconds > 0:
            from vtcaps_tf.export.saved_model import export_model

            model, base, body = soak_args
            log(f"soak: {args.soak_seconds:g} s, {args.soak_clients} clients, batching on, version 2 halfway")
            proc, url = start_server(base, "bench", "--file-system-poll-wait-seconds", "1", "--enable_batching",
                                     "--batching_parameters_file", os.path.join(tmp, "batching.config"))
            try:
                out["soak"] = soak(url, "bench", body, args.soak_seconds, args.soak_clients,
                                   lambda: export_model(model, base, 2), proc.pid, 2)
                out["soak"]["preset"] = args.presets[0]
            finally:
                status = stop_server(proc)
            out["soak"]["server_exit_status"] = status
    first = out[args.presets[0]]
    out["goals"] = {
        "speedup_16_clients_at_least_1.5": first["speedup_16_clients"] >= 1.5,
        "p99_under_3x_p50": all(out[p]["max_p99_over_p50"] < 3 for p in args.presets),
        "no_errors": all(out[p]["errors"] == 0 for p in args.presets),
    }
    if "soak" in out:
        s = out["soak"]
        out["goals"].update({"soak_no_failures": s["failed"] == 0,
                             "soak_first_request_under_2x_warm": s.get("first_over_warm", 99) <= 2,
                             "soak_rss_flat_10pct": abs(s["rss_change"]) <= 0.10})
    out["matmul_2048_fp32_gflops"] = [round(gflops_before, 1), round(matmul_gflops(), 1)]
    out["cpu_count"] = os.cpu_count()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
