"""The Beam job the way a Flink or Spark cluster runs it: PortableRunner, SDK workers started by an
EXTERNAL worker pool as separate processes. Its outputs must match the local runner's, and a pool
whose workers cannot start must make the job fail with a message in bounded time."""

import glob
import json
import os
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing import test_pipeline

from vtcaps_pipeline.beam import job_watch
from vtcaps_pipeline.beam import preprocess
from vtcaps_pipeline.beam import worker_pool
from tests.face import fixtures as fx
from vtcaps_tf.cli.preprocess import parse
from vtcaps_tf.config.preprocess import DEFAULT_STALL_TIMEOUT_S, DEFAULT_STARTUP_TIMEOUT_S
from vtcaps_tf.data import features

ARGS = ["--clip-frames", "4", "--long-frames", "8", "--image-size", "32", "--no-progress",
        "--split-ratios", "0.34,0.33,0.33", "--seed", "1"]


def _portable(address):
    return ["--runner", "PortableRunner", "--job_endpoint", "embed",
            "--environment_type", "EXTERNAL", "--environment_config", address]


def _clips(out):
    """{split: sorted (video_id, clip_index, label)} of the written shards."""
    found = {}
    for split in features.SPLITS:
        files = features.split_files(out, split)
        rows = []
        for ctx, _ in features.read_clips(files):
            rows.append((ctx["video_id"].numpy().decode(), int(ctx["clip_index"]), int(ctx["label"])))
        found[split] = sorted(rows)
    return found


def _dead_letters(out):
    rows = []
    for path in glob.glob(os.path.join(out, "dead_letter-*.jsonl")):
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return sorted((d["path"], d["reason"]) for d in rows)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """3 subjects (one per split) x 2 classes of good videos, two bad files (a dead letter each)."""
    root = str(tmp_path_factory.mktemp("videos"))
    fx.write_folder_dataset(root, classes=("happy", "sad"), subjects=("s1", "s2", "s3"))
    bad = fx.write_bad_files(os.path.join(root, "happy"))
    return root, bad


@pytest.fixture(scope="module")
def pool():
    address, server = worker_pool.start(port=0)
    yield address
    server.stop(0)


@pytest.mark.slow
def test_external_worker_pool_writes_what_the_local_runner_writes(videos, pool, tmp_path):
    root, bad = videos
    local_out, remote_out = str(tmp_path / "local"), str(tmp_path / "remote")
    base = ["--source", "folder", "--input", root, *ARGS]
    local = preprocess.run(*parse([*base, "--output", local_out]),
                           test_pipeline=test_pipeline.TestPipeline(runner=FnApiRunner()))
    remote = preprocess.run(*parse([*base, "--output", remote_out, *_portable(pool)]))

    assert _clips(remote_out) == _clips(local_out)
    assert sum(len(v) for v in _clips(local_out).values()) == 12  # 6 good videos x 2 clips
    # Both bad files are dead letters with the fixture's reasons, on both runners.
    expected = sorted((path, reason) for reason, path in bad.items())
    assert _dead_letters(local_out) == expected and _dead_letters(remote_out) == expected
    # The stats, counters included (they travel back from the remote workers' metrics).
    for stats in (local, remote):
        stats.pop("seconds")
    assert remote == local
    assert remote["counters"]["clips_written"] == 12 and remote["counters"]["dead_letters"] == 2
    assert features.read_metadata(remote_out)["counts"] == features.read_metadata(local_out)["counts"]


def test_pool_refuses_an_interpreter_without_beam(tmp_path):
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'apache_beam'\" >&2\n"
                      "exit 1\n")
    script.chmod(0o755)
    with pytest.raises(worker_pool.InterpreterError, match="apache_beam"):
        worker_pool.check_interpreter(str(script))
    proc = subprocess.run([sys.executable, "-m", "vtcaps_pipeline.beam.worker_pool", "--port", "0",
                           "--python", str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "cannot import" in proc.stderr


class _NeverFinishes:
    """A job result whose workers never start: wait_until_finish blocks until cancelled."""

    def __init__(self):
        import threading

        self.cancelled = threading.Event()

    def wait_until_finish(self):
        self.cancelled.wait()
        raise RuntimeError("cancelled")

    def cancel(self):
        self.cancelled.set()


def test_stalled_job_is_cancelled_with_a_message():
    result = _NeverFinishes()
    start = time.monotonic()
    with pytest.raises(job_watch.JobStalled, match="worker pool") as err:
        job_watch.wait_for_job(result, lambda: 0, 10, stall_timeout_s=1.0, environment="EXTERNAL",
                               poll_s=0.1)
    assert time.monotonic() - start < 10
    assert result.cancelled.is_set()
    assert "no video finished in the first" in str(err.value)


def test_workers_that_never_start_fail_the_startup_limit_not_the_stall_limit():
    result = _NeverFinishes()
    start = time.monotonic()
    with pytest.raises(job_watch.JobStalled, match="--startup-timeout") as err:
        job_watch.wait_for_job(result, lambda: 0, 10, stall_timeout_s=900, environment="EXTERNAL",
                               poll_s=0.1, startup_timeout_s=1.0, started=lambda: False)
    assert time.monotonic() - start < 10 and result.cancelled.is_set()
    assert "no SDK worker started work in" in str(err.value) and "worker_pool" in str(err.value)


def test_a_started_job_is_held_to_the_stall_limit_counted_from_its_start():
    result = _NeverFinishes()
    polls = iter(range(1000))
    start = time.monotonic()
    # Workers begin after 5 polls (0.5 s), inside the start-up limit; then nothing finishes: the
    # stall limit ends the job, counted from when work began.
    with pytest.raises(job_watch.JobStalled, match="--stall-timeout"):
        job_watch.wait_for_job(result, lambda: 0, 10, stall_timeout_s=1.0, poll_s=0.1,
                               startup_timeout_s=2.0, started=lambda: next(polls) >= 5)
    took = time.monotonic() - start
    assert took >= 1.5  # 0.5 s to start + 1 s stalled, not the stall limit from submission
    assert result.cancelled.is_set()


def test_progress_resets_the_stall_clock():
    result = _NeverFinishes()
    ticks = iter(range(1000))
    done = {"n": 0}

    def progress():
        # Moves for the first 2 s of polls, then stops.
        n = next(ticks)
        if n < 20:
            done["n"] = n
        return done["n"]

    start = time.monotonic()
    with pytest.raises(job_watch.JobStalled, match="in the last"):
        job_watch.wait_for_job(result, progress, 100, stall_timeout_s=0.5, poll_s=0.1)
    assert time.monotonic() - start >= 2.0


@pytest.mark.slow
def test_pool_whose_workers_cannot_start_fails_the_job_in_bounded_time(videos, tmp_path):
    """Beam's own pool, with a `python` on PATH that lacks apache_beam (a host set up by hand); the
    job is `vtcaps preprocess` in its own process with its default limits, which must end, not
    only raise, within the start-up limit."""
    root, _ = videos
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    bare = "/usr/bin/python3"
    if subprocess.run([bare, "-c", "import apache_beam"], capture_output=True).returncode == 0:
        pytest.skip(f"{bare} has apache_beam: it cannot stand for a bare interpreter")
    (bin_dir / "python").symlink_to(bare)
    from vtcaps_tf.train.local_cluster import free_ports

    (port,) = free_ports(1)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ.get('PATH', '')}")
    log = open(tmp_path / "pool.log", "w")
    pool = subprocess.Popen([sys.executable, "-m", worker_pool.worker_pool_main.__name__,
                             f"--service_port={port}"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(3)
        start = time.monotonic()
        job = subprocess.run(
            [sys.executable, "-m", "vtcaps_tf.cli.main", "preprocess", "--source", "folder", "--input", root,
             *ARGS, "--output", str(tmp_path / "out"), *_portable(f"localhost:{port}")],
            capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        took = time.monotonic() - start
    finally:
        pool.kill()
        pool.wait()
        log.close()
    # The default flags: the start-up limit (DEFAULT_STARTUP_TIMEOUT_S) ends the job, far short
    # of the stall limit (DEFAULT_STALL_TIMEOUT_S).
    assert job.returncode == 1, job.stderr[-2000:]
    assert "no SDK worker started work in" in job.stderr and "--startup-timeout" in job.stderr
    assert "python -m vtcaps_pipeline.beam.worker_pool" in job.stderr
    assert DEFAULT_STARTUP_TIMEOUT_S < took < DEFAULT_STARTUP_TIMEOUT_S + 60 < DEFAULT_STALL_TIMEOUT_S, took
    assert "No module named 'apache_beam'" in (tmp_path / "pool.log").read_text()
