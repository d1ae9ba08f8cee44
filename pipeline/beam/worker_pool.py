"""A Beam SDK worker pool (the EXTERNAL environment) whose workers run this very interpreter.

Flink and Spark clusters run the Python SDK workers as separate processes, usually started by a
worker pool beside each task manager / executor; the job then names the pool:

    # on every worker host, inside the project's environment (the one that has vtcaps installed):
    python -m vtcaps_pipeline.beam.worker_pool --port 50000
    # the job:
    vtcaps preprocess ... --runner PortableRunner --job_endpoint JOB_SERVER:8099 \\
        --environment_type EXTERNAL --environment_config localhost:50000

Beam's own pool (`python -m apache_beam.runners.worker.worker_pool_main`) starts each worker with
whatever `python` is first on PATH; on a host set up by hand that is often an interpreter without
apache_beam or vtcaps, the workers die at import, and the job waits for them forever. This pool
starts them with `sys.executable` (or `--python`), checks before serving that the interpreter
imports what the job needs, and passes the workers' output to its own stderr instead of an
unread pipe (a chatty worker blocks once a pipe's buffer is full).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time

from apache_beam.runners.worker import worker_pool_main

_LOG = logging.getLogger(__name__)
# Modules a worker imports to run the preprocessing job's DoFns.
REQUIRED_MODULES = ("apache_beam", "vtcaps_pipeline.beam.transforms")


class InterpreterError(RuntimeError):
    """The interpreter given to the pool cannot run the job's workers."""


def check_interpreter(python: str, modules=REQUIRED_MODULES, timeout_s: float = 120.0) -> None:
    """Raise InterpreterError unless `python` imports every module in `modules`."""
    code = "; ".join(f"import {m}" for m in modules)
    try:
        proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise InterpreterError(f"cannot run {python!r}: {err}") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise InterpreterError(f"{python!r} cannot import what the workers need ({last}); start the "
                               "pool from the environment vtcaps is installed in")


def worker_command(python: str, request, state_cache_size=0, data_buffer_time_limit_ms=0) -> list[str]:
    """The command Beam's pool runs for a StartWorker request, with our interpreter."""
    return [python, "-c",
            "from apache_beam.runners.worker.sdk_worker import SdkHarness; "
            f"SdkHarness({request.control_endpoint.url!r}, worker_id={request.worker_id!r}, "
            f"state_cache_size={int(state_cache_size)}, "
            f"data_buffer_time_limit_ms={int(data_buffer_time_limit_ms)}).run()"]


class WorkerPool(worker_pool_main.BeamFnExternalWorkerPoolServicer):
    """Beam's worker pool servicer, starting worker processes with a chosen interpreter."""

    python = sys.executable

    def StartWorker(self, start_worker_request, unused_context):
        from apache_beam.portability.api import beam_fn_api_pb2

        command = worker_command(self.python, start_worker_request, self._state_cache_size,
                                 self._data_buffer_time_limit_ms)
        try:
            # stdout to our stderr: nobody reads a pipe, and a full one blocks the worker.
            proc = subprocess.Popen(command, stdout=sys.stderr, close_fds=True)
        except OSError as err:
            return beam_fn_api_pb2.StartWorkerResponse(error=f"cannot start {self.python!r}: {err}")
        self._worker_processes[start_worker_request.worker_id] = proc
        _LOG.info("started worker %s (pid %d)", start_worker_request.worker_id, proc.pid)
        return beam_fn_api_pb2.StartWorkerResponse()


def start(port: int = 0, python: str | None = None, check: bool = True):
    """Start a pool in this process; returns (address 'localhost:PORT', grpc server)."""
    python = python or sys.executable
    if check:
        check_interpreter(python)
    cls = type("ConfiguredWorkerPool", (WorkerPool,), {"python": python})
    return cls.start(use_process=True, port=port)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vtcaps_pipeline.beam.worker_pool", description=(
        "Serve Beam's worker pool API (--environment_type EXTERNAL --environment_config HOST:PORT), "
        "starting each SDK worker with this interpreter."))
    p.add_argument("--port", type=int, default=50000, help="port to serve on (default 50000; 0: any)")
    p.add_argument("--python", default=None,
                   help="interpreter for the workers (default: the one running the pool)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        address, server = start(args.port, args.python)
    except InterpreterError as err:
        print(f"worker pool: {err}", file=sys.stderr)
        return 2
    print(f"worker pool: serving at {address} (workers run {args.python or sys.executable})",
          file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
