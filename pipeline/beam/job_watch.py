"""Waiting for a Beam job that runs somewhere else, without waiting forever.

A portable runner (PortableRunner, Flink, Spark, Dataflow) returns from `Pipeline.run()` at once
and reports a job whose SDK workers never start - an EXTERNAL worker pool whose `python` lacks
apache_beam, a missing container - as merely running: `wait_until_finish()` then never returns.
`wait_for_job` tells the two ways such a job hangs apart and cancels it, with a message naming the
likely causes: no worker started work within `startup_timeout_s` (the workers never came up), or
the job's own progress (the count of finished videos) has not moved for `stall_timeout_s` seconds
since work began (workers stuck, or videos too slow for the limit).
"""

from __future__ import annotations

import threading
import time

POLL_S = 1.0


class JobStalled(RuntimeError):
    """The job made no progress for the stall timeout and was cancelled."""


def _hint(environment: str | None) -> str:
    if environment == "EXTERNAL":
        return ("With --environment_type EXTERNAL, look at the worker pool's log: its workers must "
                "run an interpreter that has apache_beam and vtcaps (start the pool with `python -m "
                "vtcaps_pipeline.beam.worker_pool` from the project's environment)")
    return "Look at the runner's worker logs"


def _stall_message(done: int, total: int, waited: float, environment: str | None) -> str:
    if done == 0:
        what = f"no video finished in the first {waited:.0f} s"
    else:
        what = f"no video finished in the last {waited:.0f} s ({done}/{total} done)"
    return (f"{what}: the SDK workers did not start or are stuck. {_hint(environment)}. The job was "
            "cancelled (--stall-timeout sets the limit).")


def _startup_message(waited: float, total: int, environment: str | None) -> str:
    return (f"no SDK worker started work in {waited:.0f} s (0/{total} videos done): the SDK workers "
            f"did not start or are stuck. {_hint(environment)}. The job was cancelled "
            "(--startup-timeout sets the limit; runners that start machines for their workers, "
            "such as Dataflow, need minutes).")


def wait_for_job(result, progress, total: int, stall_timeout_s: float | None,
                 environment: str | None = None, poll_s: float = POLL_S,
                 startup_timeout_s: float | None = None, started=None):
    """Wait until `result` finishes; return its final state.

    progress(): how many videos are done so far; started(): whether any worker began work
    (default: progress() > 0). With a positive startup_timeout_s, a job none of whose workers
    started in that long is cancelled and JobStalled raised; with a positive stall_timeout_s, so
    is a job whose progress has not changed for that long since its work began (without a
    start-up limit: since it was submitted). Errors of the job itself are raised as
    `wait_until_finish` raises them.
    """
    outcome = {}
    started = started or (lambda: progress() > 0)

    def _wait():
        try:
            outcome["state"] = result.wait_until_finish()
        except BaseException as err:  # re-raised in the caller's thread
            outcome["error"] = err

    waiter = threading.Thread(target=_wait, name="beam-job-wait", daemon=True)
    waiter.start()
    submitted = time.monotonic()
    began = None if startup_timeout_s else submitted
    last, last_change = -1, submitted
    while waiter.is_alive():
        waiter.join(poll_s)
        if not waiter.is_alive():
            break
        now = time.monotonic()
        if began is None:
            if started():
                began = last_change = now
            elif now - submitted > startup_timeout_s:
                _cancel(result)
                raise JobStalled(_startup_message(now - submitted, total, environment))
            else:
                continue
        done = progress()
        if done != last:
            last, last_change = done, now
        elif stall_timeout_s and now - last_change > stall_timeout_s:
            _cancel(result)
            raise JobStalled(_stall_message(done, total, now - last_change, environment))
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("state")


def _cancel(result) -> None:
    try:
        result.cancel()
    except Exception:  # the job may be gone already; the hang is the error to report
        pass
