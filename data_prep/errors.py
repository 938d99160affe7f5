"""One exception type for every user-facing failure, so CLIs can print one line and exit non-zero."""


class ClreproError(Exception):
    """A problem the user can fix; the message names the fix."""
