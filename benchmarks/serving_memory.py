"""`vtcaps serve`'s memory across version swaps: the server's RSS after requests to one version and
after each of `--swaps` new versions is exported and the previous one unloaded. Prints one JSON
line.

The server serves the `tiny` export (`--preset`) and polls its base path every second; each step
sends `--requests` requests of what `vtcaps predict --server` sends (one clip as a SequenceExample
to `serve_examples`, `benchmarks/serving_load.py`'s body) and reads `/proc/PID/status`'s VmRSS.
A version counts as swapped in once it is the only AVAILABLE one.

    python benchmarks/serving_memory.py [--swaps 3] [--requests 300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.matmul import matmul_gflops  # noqa: E402
from benchmarks.serving_load import (CLASSES, model_request, rss_bytes, start_server,  # noqa: E402
                                     stop_server, version_states)


def _only_available(client, version: int) -> bool:
    states = version_states(client)
    return states.get(version) == "AVAILABLE" and sum(s == "AVAILABLE" for s in states.values()) == 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--swaps", type=int, default=3)
    p.add_argument("--requests", type=int, default=300, help="requests after each load (default 300)")
    args = p.parse_args(argv)

    from vtcaps_tf.apps.client import ServingClient
    from vtcaps_tf.export.saved_model import export_model
    from vtcaps_tf.models import build_model

    gflops = matmul_gflops()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(args.preset, class_names=CLASSES)
        base = os.path.join(tmp, "model")
        export_model(model, base)
        body, _ = model_request(model)
        proc, url = start_server(base, "model", "--file-system-poll-wait-seconds", "1")
        steps = []

        def record(what):
            steps.append({"after": what, "rss_mb": round(rss_bytes(proc.pid) / 2**20, 1)})

        try:
            with ServingClient(url, "model") as client:
                record("start")
                for version in range(1, args.swaps + 2):
                    if version > 1:
                        export_model(model, base, version)
                        while not _only_available(client, version):
                            time.sleep(0.2)
                        record(f"version {version} loaded, version {version - 1} unloaded")
                    for _ in range(args.requests):
                        client.predict({}, body=body)
                    record(f"{args.requests} requests to version {version}")
        finally:
            stop_server(proc)
    print(json.dumps({"benchmark": "serving_memory", "preset": args.preset, "steps": steps,
                      "matmul_gflops": round(gflops, 1)}))


if __name__ == "__main__":
    main()
