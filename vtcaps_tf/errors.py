"""The exit statuses of every `vtcaps` command, and the errors that mean "bad usage or input".

`EXIT_STATUSES` says what each status means; `vtcaps --help` shows it (`exit_status_table`).
`vtcaps_tf.cli.main` maps a `UsageError` raised by a command to EXIT_USAGE, a `PreemptedError`
to EXIT_PREEMPTED, Ctrl-C to EXIT_INTERRUPTED and any other exception to EXIT_FAILURE; a command's `main` may also return these
numbers itself. Library code raises `UsageError` (or a subclass) for input it cannot use.
"""

from __future__ import annotations

import textwrap

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: a temporary failure, to be retried
EXIT_INTERRUPTED = 130  # the shell's status for a process ended by SIGINT (128 + 2)

EXIT_STATUSES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "ok"),
    (EXIT_FAILURE, "failure while running: the input was acceptable, the work failed (a server "
                   "that does not answer, a multi-worker peer that fails, a Beam job that stalls, "
                   "a training that diverges, output that cannot be written)"),
    (EXIT_USAGE, "bad usage or input: an unknown or malformed flag; a missing or unusable input "
                 "path, model or config; a config value of the wrong type"),
    (EXIT_PREEMPTED, "preempted, resume me: a training stopped by SIGTERM saved a checkpoint at "
                     "a step boundary; rerun the same command with --resume to continue from that "
                     "step"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)


def exit_status_table(width: int = 79, indent: int = 2) -> str:
    """EXIT_STATUSES as text: one status a paragraph, its meaning wrapped beside it."""
    lead = " " * indent
    hang = lead + " " * 5
    return "\n".join(textwrap.fill(text, width, initial_indent=f"{lead}{code:<5}",
                                   subsequent_indent=hang, break_on_hyphens=False)
                     for code, text in EXIT_STATUSES)


class PreemptedError(Exception):
    """A run stopped on SIGTERM after saving what it needs to continue (exit status 75)."""


class UsageError(ValueError):
    """The command was called wrongly or its input is missing or unusable (exit status 2)."""


class InputNotFoundError(UsageError, FileNotFoundError):
    """A named input path does not exist (exit status 2); still a FileNotFoundError for callers
    that catch that."""
