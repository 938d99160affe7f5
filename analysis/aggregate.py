"""`python -m analysis.aggregate --out CSV RECORD...`: all run records -> one tidy CSV."""
from __future__ import annotations

import argparse

from data_prep.atomic import atomic_path

from .records import load, tidy


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m analysis.aggregate")
    p.add_argument("--out", required=True)
    p.add_argument("records", nargs="+")
    args = p.parse_args(argv)
    table = tidy([load(path) for path in args.records])
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    print(f"[aggregate] {len(args.records)} runs -> {len(table)} rows in {args.out}")


if __name__ == "__main__":
    main()
