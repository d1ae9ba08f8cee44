"""The exit statuses of every `vtcaps` command, and the error that means "bad usage or input".

    0  ok
    1  failure while running (the input was acceptable, the work failed)
    2  bad usage or input: an unknown flag, a missing or malformed input path or file

`vtcaps_tf.cli.main` maps a `UsageError` raised by a command to 2 and any other exception to 1; a
command's `cli_main` may also return these numbers itself.
"""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(ValueError):
    """The command was called wrongly or its input is missing or unusable (exit status 2)."""
