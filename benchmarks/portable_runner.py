"""The Beam job on the local runner vs through a loopback EXTERNAL worker pool, same videos, one run.

Local: `vtcaps preprocess`'s default (FnApiRunner, multi-threading, one worker thread per core).
Pool: `--runner PortableRunner --job_endpoint embed --environment_type EXTERNAL` against
`vtcaps_pipeline.beam.worker_pool` started in this process (its SDK workers are separate processes, as on a
Flink or Spark cluster). Prints one JSON line with both pipeline times and the outputs' agreement.

    python benchmarks/portable_runner.py [--subjects 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.matmul import matmul_gflops  # noqa: E402

ARGS = ["--clip-frames", "4", "--long-frames", "8", "--image-size", "32", "--no-progress",
        "--split-ratios", "0.34,0.33,0.33", "--seed", "1"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--subjects", type=int, default=3)
    args = p.parse_args(argv)

    from vtcaps_pipeline.beam import preprocess
    from vtcaps_pipeline.beam import worker_pool
    from tests.face import fixtures as fx
    from vtcaps_tf.cli.preprocess import parse

    gflops = matmul_gflops()
    root = tempfile.mkdtemp(prefix="pool-videos-")
    fx.write_folder_dataset(root, classes=("happy", "sad"),
                            subjects=tuple(f"s{i}" for i in range(args.subjects)))
    base = ["--source", "folder", "--input", root, *ARGS]
    local = preprocess.run(*parse([*base, "--output", tempfile.mkdtemp(prefix="local-")]))
    address, server = worker_pool.start(port=0)
    try:
        pool = preprocess.run(*parse([*base, "--output", tempfile.mkdtemp(prefix="pool-"),
                                      "--runner", "PortableRunner", "--job_endpoint", "embed",
                                      "--environment_type", "EXTERNAL", "--environment_config", address]))
    finally:
        server.stop(0)
    differ = sorted(k for k in set(local) | set(pool)
                    if k not in ("seconds", "splits") and local.get(k) != pool.get(k))
    # Per split: the shard count follows the runner's parallelism; everything else must agree.
    differ += sorted(f"splits.{split}.{k}" for split in local["splits"]
                     for k in set(local["splits"][split]) | set(pool["splits"].get(split, {}))
                     if local["splits"][split].get(k) != pool["splits"].get(split, {}).get(k))
    print(json.dumps({
        "benchmark": "portable_runner", "videos": local["videos"]["listed"],
        "clips": local["counters"].get("clips_written"), "cpus": os.cpu_count(),
        "local_pipeline_s": local["seconds"]["pipeline"],
        "pool_pipeline_s": pool["seconds"]["pipeline"],
        "local_first_video_s": local["seconds"].get("first_video_done"),
        "pool_first_video_s": pool["seconds"].get("first_video_done"),
        "pool_vs_local": round(pool["seconds"]["pipeline"] / local["seconds"]["pipeline"], 3),
        "stats_keys_that_differ": differ, "matmul_2048_gflops": round(gflops, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
