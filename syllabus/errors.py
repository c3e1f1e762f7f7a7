"""The two kinds of failure the command line reports in one line, without a traceback."""


class UsageError(Exception):
    """Bad input from the user: unknown option, bad value, missing or corrupt data.

    The CLI prints the message on one line and exits with status 2.
    """


class RunFailed(Exception):
    """A run that started but could not finish (for instance a NaN loss).

    The CLI prints the message and exits with status 1; what was saved before stays.
    """
