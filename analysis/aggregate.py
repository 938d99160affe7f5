"""`python -m analysis.aggregate --out CSV [--matrix CSV] [--evals CSV] RECORD...`: run records -> tidy CSVs.

--out     one row per (run, metric, convention), metrics recomputed from R and b (records.tidy)
--matrix  every R entry, one row per (run, trained_task, eval_task) (records.matrix_long)
--evals   accuracy over the stream for a few tasks per run (records.eval_long)
Stored metrics that disagree with the recomputed ones are listed on stderr (the recomputed ones are used).
"""
from __future__ import annotations

import argparse
import sys

from data_prep.atomic import atomic_path
from data_prep.errors import one_line_errors

from .records import eval_long, load, matrix_long, stored_mismatches, tidy


def write_csv(frame, path: str) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.10g")


@one_line_errors
def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m analysis.aggregate")
    p.add_argument("--out", required=True)
    p.add_argument("--matrix")
    p.add_argument("--evals")
    p.add_argument("--curve-tasks", type=int, default=5, help="tasks per run kept in --evals (evenly spaced)")
    p.add_argument("records", nargs="+")
    args = p.parse_args(argv)
    records = [load(path) for path in args.records]
    for line in stored_mismatches(records):
        print(f"[aggregate] warning: {line}", file=sys.stderr)
    table = tidy(records)
    write_csv(table, args.out)
    if args.matrix:
        write_csv(matrix_long(records), args.matrix)
    if args.evals:
        write_csv(eval_long(records, args.curve_tasks), args.evals)
    print(f"[aggregate] {len(records)} runs -> {len(table)} rows in {args.out}")


if __name__ == "__main__":
    sys.exit(main())
