"""One exception type for every user-facing failure, so CLIs can print one line and exit non-zero."""
from __future__ import annotations

import functools
import sys


class ClreproError(Exception):
    """A problem the user can fix; the message names the fix."""


def one_line_errors(main):
    """Wrap a CLI `main`: a ClreproError becomes `error: <message>` on stderr (one line) and exit code 1.

    The job logs end with that line, which the workflow's error summary (tools/job_errors.py) collects.
    """
    @functools.wraps(main)
    def wrapper(argv=None) -> int:
        try:
            return main(argv) or 0
        except ClreproError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 1

    return wrapper
