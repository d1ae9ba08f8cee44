"""Waiting for a Beam job that runs somewhere else, without waiting forever.

A portable runner (PortableRunner, Flink, Spark, Dataflow) returns from `Pipeline.run()` at once
and reports a job whose SDK workers never start - an EXTERNAL worker pool whose `python` lacks
apache_beam, a missing container - as merely running: `wait_until_finish()` then never returns.
`wait_for_job` watches the job's own progress (the count of finished videos) and cancels the job,
with a message naming the likely causes, when it has not moved for `stall_timeout_s` seconds.
"""

from __future__ import annotations

import threading
import time

POLL_S = 1.0


class JobStalled(RuntimeError):
    """The job made no progress for the stall timeout and was cancelled."""


def _stall_message(done: int, total: int, waited: float, environment: str | None) -> str:
    if done == 0:
        what = f"no video finished in the first {waited:.0f} s"
    else:
        what = f"no video finished in the last {waited:.0f} s ({done}/{total} done)"
    hint = ("the SDK workers did not start or are stuck. With --environment_type EXTERNAL, look at "
            "the worker pool's log: its workers must run an interpreter that has apache_beam and "
            "vtcaps (start the pool with `python -m vtcaps_pipeline.beam.worker_pool` from the project's "
            "environment)") if environment == "EXTERNAL" else (
            "the SDK workers did not start or are stuck; look at the runner's worker logs")
    return f"{what}: {hint}. The job was cancelled (--stall-timeout sets the limit)."


def wait_for_job(result, progress, total: int, stall_timeout_s: float | None,
                 environment: str | None = None, poll_s: float = POLL_S):
    """Wait until `result` finishes; return its final state.

    progress(): how many videos are done so far. With a positive stall_timeout_s, a job whose
    progress has not changed for that long is cancelled and JobStalled raised. Errors of the job
    itself are raised as `wait_until_finish` raises them.
    """
    outcome = {}

    def _wait():
        try:
            outcome["state"] = result.wait_until_finish()
        except BaseException as err:  # re-raised in the caller's thread
            outcome["error"] = err

    waiter = threading.Thread(target=_wait, name="beam-job-wait", daemon=True)
    waiter.start()
    last, last_change = -1, time.monotonic()
    while waiter.is_alive():
        waiter.join(poll_s)
        if not waiter.is_alive():
            break
        done = progress()
        now = time.monotonic()
        if done != last:
            last, last_change = done, now
        elif stall_timeout_s and now - last_change > stall_timeout_s:
            try:
                result.cancel()
            except Exception:  # the job may be gone already; the stall is the error to report
                pass
            raise JobStalled(_stall_message(done, total, now - last_change, environment))
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("state")
