"""`python -m analysis.check --out MANIFEST RECORD...`: check every run record before any aggregate is touched.

Snakemake deletes a job's outputs when it starts, so a malformed record found by the aggregate job itself
would leave the tables stale beside deleted CSVs. This step runs first and writes only a manifest
(record path -> sha256) that the aggregate job needs: when a record is bad it fails here, with one line
naming the record, and every table and plot stays as it was.
"""
from __future__ import annotations

import argparse
import sys

from data_prep.atomic import sha256_file, write_json
from data_prep.errors import one_line_errors

from .records import load


@one_line_errors
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.check")
    p.add_argument("--out", required=True)
    p.add_argument("records", nargs="+")
    args = p.parse_args(argv)
    for path in args.records:
        load(path)
    write_json(args.out, {path: sha256_file(path) for path in args.records})
    print(f"[check] {len(args.records)} run records are well-formed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
