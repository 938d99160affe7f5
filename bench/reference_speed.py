"""Training speed against the reference code: the official GEM/MER scripts and clrepro on the same exported stream.

Per cell (protocol, method, memory), on Rotations (20 tasks, seed 0, one thread each), both programs run the
whole stream with evaluation only at task boundaries on a few test images (`--n-test`, default 100): the
reference's own timing of its loop (main.py's last printed number; its 21 evaluations of 100 images per task
take milliseconds) against clrepro's train_s from its run record (the loop without the evaluations). Runs are cached under --work like bench/reference_agreement.py's
(whose reference runner, stream export and cell specs this reuses); it needs the reference clones, so it is not
part of the test suite. It prints examples/s and the ratio; it never asserts a time.

  python bench/reference_speed.py --mer-repo DIR --gem-repo DIR --work DIR [--cells mer2019:online ...]
      [--samples 1000] [--n-test 100] [--jobs 1]

A cell is protocol:method[:memory]; memory defaults to 500 for methods with a memory under mer2019 and 5120
(256 per task) under gem2017. A-GEM, DGR and TA-A-GEM have no reference in these two repositories.
"""
from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.reference_agreement import (MEMORY_FLAG, clrepro_spec, prepare_data, run_clrepro,  # noqa: E402
                                       run_reference)

CELLS = ["mer2019:online", "mer2019:independent", "mer2019:taskinput", "mer2019:ewc", "mer2019:eralg4",
         "mer2019:eralg5", "mer2019:meralg6", "mer2019:meralg7", "mer2019:gem", "gem2017:online", "gem2017:ewc",
         "gem2017:gem"]


def parse_cell(cell: str) -> tuple[str, str, int]:
    proto, method, *memory = cell.split(":")
    if memory:
        return proto, method, int(memory[0])
    return proto, method, (0 if method not in MEMORY_FLAG else 5120 if proto == "gem2017" else 500)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/reference_speed.py", description=__doc__.split("\n")[0])
    p.add_argument("--mer-repo", required=True, help="a checkout of mattriemer/MER (4b7b9c9, the torch 1.4+ port)")
    p.add_argument("--gem-repo", required=True, help="a checkout of facebookresearch/GradientEpisodicMemory (34c6b8e)")
    p.add_argument("--work", required=True, help="scratch directory: data, exports, cached runs")
    p.add_argument("--mnist", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    p.add_argument("--cells", nargs="+", default=CELLS)
    p.add_argument("--samples", type=int, default=1000, help="examples per task (default 1000, the protocols')")
    p.add_argument("--n-test", type=int, default=100, help="test images per task at each boundary evaluation")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (a reference run holds ~4 GB of stream)")
    args = p.parse_args(argv)
    work = Path(args.work)
    repos = {"mer": args.mer_repo, "gem": args.gem_repo}
    stream_dir, mnist_dir, export = prepare_data(work, args.mnist, "rotations", 20, 0, args.n_test)

    def one(cell: str) -> str:
        proto, method, memory = parse_cell(cell)
        spec = clrepro_spec("rotations", 20, method, memory, 0, args.samples, args.n_test, 10**9, "fast",
                            protocol=proto)
        name = f"speed_n{args.samples}_test{args.n_test}/{proto}_{method}_mem{memory}"
        ref = run_reference(repos, spec, export, work / "runs" / name / "reference")
        mine = run_clrepro(spec, stream_dir, mnist_dir, work / "runs" / name / "clrepro.json")
        n = 20 * args.samples
        ours = mine["timing"]["train_s"]
        print(f"[speed] {cell} done", file=sys.stderr, flush=True)
        return (f"| {proto} | {method} | {memory} | {spec['batch_size']} | {ref['loop_s']:.1f} | {ours:.1f} | "
                f"{n / ref['loop_s']:.0f} | {n / ours:.0f} | {ref['loop_s'] / ours:.1f}x |")

    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(one, args.cells))
    print(f"Rotations, 20 tasks x {args.samples} examples, seed 0, one thread each; evaluation at task boundaries "
          f"on {args.n_test} test images. Reference s: its own timing of its training loop (with "
          f"21 boundary evaluations of {args.n_test} images per task, milliseconds); clrepro s: train_s of its record.\n")
    print("| protocol | method | memory | batch | reference s | clrepro s | reference ex/s | clrepro ex/s "
          "| clrepro / reference |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
