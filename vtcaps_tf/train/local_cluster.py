"""A local cluster: N worker processes on 127.0.0.1, each with its generated TF_CONFIG.

`vtcaps train --local-workers N ...` (and `vtcaps crossval --local-workers N ...`) call `launch`,
which starts `python -m <module> ... --multi-worker` N times (the module: the `vtcaps` command,
`vtcaps_tf.cli.main`) and watches them: when one exits with an error, the others are stopped at
once (they would otherwise wait on it until their collective timeout) and the launcher says which
worker failed and how. Worker output is passed through with a `[worker i]` prefix. The launcher
imports nothing of the trainer: the workers are separate processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from vtcaps_tf.errors import EXIT_FAILURE, EXIT_OK, EXIT_PREEMPTED, EXIT_USAGE

# TensorFlow threads per worker process (the cores shared by the workers), read by each worker
# (vtcaps_tf.train.multiworker.configure_threads).
THREADS_ENV = "VTCAPS_WORKER_THREADS"
POLL_S = 0.5
STOP_GRACE_S = 10.0  # SIGTERM first, SIGKILL after this


def free_ports(n: int) -> list[int]:
    """n TCP ports free on 127.0.0.1 right now (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tf_config(addresses: list[str], index: int) -> str:
    """The TF_CONFIG of worker `index` in a cluster of `addresses` (worker 0 is the chief)."""
    return json.dumps({"cluster": {"worker": list(addresses)},
                       "task": {"type": "worker", "index": int(index)}})


def threads_per_worker(n: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, n))


def strip_launcher_args(argv: list[str]) -> list[str]:
    """argv without --local-workers N / --local-workers=N."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--local-workers":
            skip = True
            continue
        if arg.startswith("--local-workers="):
            continue
        out.append(arg)
    return out


def _pump(stream, prefix, sink):
    for line in iter(stream.readline, ""):
        sink.write(f"{prefix}{line}")
        sink.flush()
    stream.close()


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def launch(module: str, argv: list[str], num_workers: int, env: dict | None = None,
           out=None, err=None, timeout_s: float | None = None) -> int:
    """Run `python -m module argv --multi-worker` as `num_workers` local workers; 0 when all succeed.

    A worker that fails (or `timeout_s` passing) stops the others; the return code is then 1, or
    2 when the worker refused its input (status 2: every worker would) or `num_workers` is < 1.
    A SIGTERM to the launcher goes on to every worker; workers that exit EXIT_PREEMPTED (they
    saved a checkpoint at one step boundary together) make the launcher exit with it too.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if num_workers < 1:
        print(f"--local-workers must be >= 1, got {num_workers}", file=err)
        return EXIT_USAGE
    addresses = [f"127.0.0.1:{p}" for p in free_ports(num_workers)]
    base_env = dict(os.environ if env is None else env)
    base_env.setdefault(THREADS_ENV, str(threads_per_worker(num_workers)))
    base_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [sys.executable, "-m", module, *strip_launcher_args(argv), "--multi-worker"]
    print(f"local cluster: {num_workers} worker(s) at {', '.join(addresses)}, "
          f"{base_env[THREADS_ENV]} thread(s) each", file=err, flush=True)
    procs, pumps = [], []

    def forward_sigterm(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    previous = (signal.signal(signal.SIGTERM, forward_sigterm)
                if threading.current_thread() is threading.main_thread() else None)
    try:
        for i in range(num_workers):
            proc = subprocess.Popen(cmd, env=dict(base_env, TF_CONFIG=tf_config(addresses, i)),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    bufsize=1)
            procs.append(proc)
            for stream, sink in ((proc.stdout, out), (proc.stderr, err)):
                t = threading.Thread(target=_pump, args=(stream, f"[worker {i}] ", sink), daemon=True)
                t.start()
                pumps.append(t)
        start = time.monotonic()
        while True:
            codes = [p.poll() for p in procs]
            if EXIT_PREEMPTED in codes and all(c in (0, EXIT_PREEMPTED) for c in codes):
                print("local cluster: the workers were preempted (SIGTERM) and saved a checkpoint; "
                      "start the run again with --resume to continue from it", file=err, flush=True)
                return EXIT_PREEMPTED
            # a preempted worker waits for its peers, which save at the same step
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0, EXIT_PREEMPTED)]
            if failed:
                i, code = failed[0]
                running = [j for j, c in enumerate(codes) if c is None]
                refused = code == EXIT_USAGE  # its input or flags: fix them, not a rerun
                print(f"local cluster: worker {i} {_describe(code)}; stopping "
                      f"{'workers ' + ', '.join(map(str, running)) if running else 'nothing else'}. "
                      + ("The worker refused the command's input (see its message)." if refused else
                         "The run stopped; start it again with --resume to continue from its last "
                         "checkpoint."), file=err, flush=True)
                return EXIT_USAGE if refused else EXIT_FAILURE
            if all(c == 0 for c in codes):
                return EXIT_OK
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                print(f"local cluster: the workers ran longer than {timeout_s:.0f}s; stopping them",
                      file=err, flush=True)
                return EXIT_FAILURE
            time.sleep(POLL_S)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        _stop(procs)
        for t in pumps:
            t.join(timeout=5)


def _stop(procs):
    live = [p for p in procs if p.poll() is None]
    for p in live:
        p.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for p in live:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
