"""Command line: `python -m data_prep {mnist,stream,export-reference} ...` (what the Snakemake rules call)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ClreproError, one_line_errors


def _splits(text: str) -> list:
    """--classes as JSON, e.g. [[0,1],[2,3]]; a typo is one line, not a traceback."""
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ClreproError(f"--classes {text!r} is not JSON; give the classes of each task, e.g. "
                           f"'[[0,1],[2,3],[4,5],[6,7],[8,9]]'") from None


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("mnist", help="verify MNIST and write it as .npy + manifest")
    p.add_argument("--source-dir", default=None, help="directory with the four IDX files (gzipped or not)")
    p.add_argument("--cache", default="data/download", help="where torchvision downloads to if needed")
    p.add_argument("--no-download", action="store_true", help="never fall back to the download")
    p.add_argument("--out", required=True)
    p = sub.add_parser("stream", help="build one task stream")
    p.add_argument("--dataset", required=True)
    p.add_argument("--kind", required=True)
    p.add_argument("--n-tasks", type=int, required=True)
    p.add_argument("--min-deg", type=float, default=0.0)
    p.add_argument("--max-deg", type=float, default=180.0)
    p.add_argument("--angles", default=None, help="rotation: binned (GEM, default) or even (TA-A-GEM)")
    p.add_argument("--classes", default=None, help="class_split: each task's classes as JSON, e.g. [[0,1],[2,3]]")
    p.add_argument("--stream-seed", type=int, required=True)
    p.add_argument("--mnist", required=True, help="directory written by the mnist command")
    p.add_argument("--out", required=True)
    p = sub.add_parser("export-reference", help="write a stream as the GEM/MER torch.save file")
    p.add_argument("--stream", required=True)
    p.add_argument("--mnist", required=True)
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.cmd == "mnist":
        from . import mnist
        arrays, source = mnist.acquire(args.source_dir, Path(args.cache), not args.no_download)
        mnist.check_shapes(arrays)
        print(f"[mnist] verified MD5 of all four files from {source}")
        print(f"[mnist] wrote {mnist.write(arrays, Path(args.out))}")
    elif args.cmd == "stream":
        import json

        from .streams import stream_def, verify_manifest, write_stream
        mnist_manifest = Path(args.mnist) / "manifest.json"
        verify_manifest(mnist_manifest)
        entry = {"kind": args.kind, "n_tasks": args.n_tasks, "min_deg": args.min_deg, "max_deg": args.max_deg,
                 **({"angles": args.angles} if args.angles else {}),
                 **({"splits": _splits(args.classes)} if args.classes else {})}
        sdef = stream_def(args.dataset, entry)   # the same checks as the config's, one line each
        print(f"[stream] wrote {write_stream(Path(args.out), args.dataset, sdef, args.stream_seed, mnist_manifest)}")
    else:
        from .export_reference import export
        from .streams import TaskStream
        export(TaskStream.load(Path(args.stream), Path(args.mnist)), Path(args.out))
        print(f"[export] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
