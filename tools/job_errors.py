"""What the workflow prints around a run: the sizes it runs at, and one line per distinct job error.

Snakemake reports a failed job with its shell command, log path and log contents, once per job; a grid
failing on one cause prints the same error dozens of times. The `onerror` handler ends the output with
`failed_summary`: each distinct clrepro error (the `error: ...` line every CLI ends its log with) once,
with how many jobs hit it and one log to read.
"""
from __future__ import annotations

import os
import sys
from collections import OrderedDict
from pathlib import Path


def last_error_line(log: Path) -> str | None:
    """The `error: ...` line a clrepro CLI writes last before exiting non-zero, if any."""
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    for line in reversed(lines[-20:]):
        if line.startswith("error: "):
            return line
    return None


def job_errors(log_root: str | os.PathLike, since: float) -> "OrderedDict[str, list[Path]]":
    """Distinct error lines of the job logs under `log_root` written at or after `since` (epoch seconds)."""
    found: OrderedDict[str, list[Path]] = OrderedDict()
    root = Path(log_root)
    if not root.is_dir():
        return found
    logs = [p for p in root.rglob("*.log") if p.is_file() and p.stat().st_mtime >= since]
    for log in sorted(logs, key=lambda p: p.stat().st_mtime):
        line = last_error_line(log)
        if line is not None:
            found.setdefault(line, []).append(log)
    return found


def failed_summary(log_root: str | os.PathLike, since: float) -> str:
    errors = job_errors(log_root, since)
    if not errors:
        return "clrepro: the run failed; Snakemake's messages above name the failed job and its log"
    out = [f"clrepro: the run failed ({sum(len(v) for v in errors.values())} job(s) ended with an error; "
           f"finished run records are kept):"]
    for line, logs in errors.items():
        more = f" ({len(logs)} jobs; e.g. {logs[0]})" if len(logs) > 1 else f" ({logs[0]})"
        out.append(line + more)
    return "\n".join(out)


SUMMARY_ENV = "CLREPRO_ERROR_SUMMARY"


def report_failure(summary: str) -> None:
    """Print the summary; also hand it to ./clrepro (via $CLREPRO_ERROR_SUMMARY), which prints it last."""
    print(summary, file=sys.stderr)
    target = os.environ.get(SUMMARY_ENV)
    if target:
        Path(target).write_text(summary + "\n")


def sizes_line(specs: list[dict]) -> str | None:
    """One line naming every size reduced from the protocol in the planned runs, or None at full size."""
    reduced = OrderedDict()
    for spec in specs:
        for name, protocol_value in sorted(spec.get("reduced", {}).items()):
            reduced.setdefault((spec["protocol"], spec["dataset"], name), (spec[name], protocol_value))
    if not reduced:
        return None
    parts = [f"{d} {name}={ours} (protocol {proto}: {theirs})"
             for (proto, d, name), (ours, theirs) in reduced.items()]
    return "clrepro: REDUCED sizes, not the protocol's: " + "; ".join(parts)
