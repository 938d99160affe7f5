"""Agreement with the reference code: the official GEM/MER scripts and clrepro on the same exported stream.

The MER paper's tables are unreachable, so the MER protocol's anchor is its official code, run here on
clrepro's own streams (exported in the reference format). Per grid cell (method, stream, memory, seed):

- the reference: `main.py` of mattriemer/MER (online, independent, taskinput, ewc, eralg4/5, meralg1/6/7) or of
  facebookresearch/GradientEpisodicMemory (gem: its QP has the 1e-3 ridge of clrepro's protocol), unmodified,
  from the clones passed as arguments, with the cell's hyper-parameters (config/protocols/mer2019.yaml) as flags;
- clrepro with `compat.rng: reference` (same seed: the same run, up to float rounding) and with the default
  `compat.rng: fast` (same distribution, another random stream: agreement only in the mean over seeds).

Both score the first n-1 of the n exported test images and divide by n (`eval_drop_last_test_example: true`).
Nothing here runs in the test suite: it needs the reference clones and hours of CPU.

  python bench/reference_agreement.py run --mer-repo DIR --gem-repo DIR --work DIR [--mnist DIR]
      [--datasets rotations permutations] [--n-tasks 20] [--samples 1000] [--n-test 2000] [--log-every 100]
      [--methods eralg4 meralg6] [--memories 200 500] [--seeds 0 1 2 3 4] [--table FILE.md] [--jobs 1]
      [--cached-only]
  python bench/reference_agreement.py freeze --mer-repo DIR --gem-repo DIR --work DIR --out tests/data/reference_rng.json

`run` caches every finished run under --work (rerunning only adds the missing ones) and prints the agreement
table (also written to --table). `freeze` runs the reference once on the small stream of
tests/test_reference_rng.py with its random calls logged (replay draws, reservoir slots, Alg. 7's batch
order), by wrapping `random.shuffle` / `random.randint` around the unmodified reference, and stores the
numbers only: evaluation logs, counts, sha256 of the logged draws and their first entries.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# cached results are trusted by the next run, so every file it writes is written atomically
from data_prep.atomic import atomic_path, write_text  # noqa: E402  (needs ROOT on the path)

STREAM_KIND = {"rotations": "rotation", "permutations": "permutation", "many_permutations": "permutation"}
# which clone runs a method, and how its memory is passed (the wildcard is the total memory)
REFERENCE_REPO = {"gem": "gem"}                          # everything else: the MER clone
SOURCES = {"mer": "mattriemer/MER@4b7b9c9", "gem": "facebookresearch/GradientEpisodicMemory@34c6b8e"}
MEMORY_FLAG = {"gem": ("--n_memories", "per_task"), "eralg4": ("--memories", "total"),
               "eralg5": ("--memories", "total"), "meralg1": ("--memories", "total"),
               "meralg6": ("--memories", "total"), "meralg7": ("--memories", "total")}
FLAGS = ("lr", "replay_batch_size", "beta", "gamma", "batches_per_example", "s", "n_memories", "memory_strength")
# hyper-parameters the reference code cannot vary: a cell with another value has no reference to compare with
FIXED = {"qp_ridge": 1e-3, "margin_mode": "lower_bound", "reservoir_randint": "inclusive",
         "replay_draw": "with_replacement", "meralg6_extra_draw": True, "memory_fill": "ring",
         "patterns_per_experience": None, "projected": "gradient"}
SAME_IN_BOTH_MODES = ("online", "independent", "taskinput")   # one run serves both modes (GEM, EWC: not, docs/gem.md)
IGNORED = ("engine", "rng")   # no effect on the math (engine: rounding only)
FREEZE = {"dataset": "rotations", "n_tasks": 3, "stream_seed": 0, "samples_per_task": 100, "n_test": 500,
          "log_every": 50, "memory": 200, "seed": 0,
          "methods": ["eralg4", "eralg5", "meralg1", "meralg6", "meralg7", "online", "independent", "taskinput",
                      "ewc", "gem"]}


# ---- data ------------------------------------------------------------------------------------------------

def prepare_stream(work: Path, mnist_src: str, dataset: str, n_tasks: int, stream_seed: int) -> tuple[Path, Path]:
    """(stream dir, mnist dir) under work: MNIST verified once, then the stream."""
    from data_prep import mnist
    from data_prep.streams import DEFAULT_STREAMS, StreamDef, write_stream

    mnist_dir = work / "mnist"
    if not (mnist_dir / "manifest.json").exists():
        arrays, _ = mnist.acquire(mnist_src, work / "download", False)
        mnist.write(arrays, mnist_dir)
    base = DEFAULT_STREAMS[dataset]
    stream_dir = work / "streams" / f"{dataset}_T{n_tasks}_s{stream_seed}"
    if not (stream_dir / "manifest.json").exists():
        write_stream(stream_dir, dataset, StreamDef(base.kind, n_tasks, base.min_deg, base.max_deg), stream_seed,
                     mnist_dir / "manifest.json")
    return stream_dir, mnist_dir


def prepare_data(work: Path, mnist_src: str, dataset: str, n_tasks: int, stream_seed: int, n_test: int):
    """(stream dir, mnist dir, exported .pt): the stream and its reference-format export with the first n_test
    test images of every task (the reference scores n_test - 1 of them)."""
    stream_dir, mnist_dir = prepare_stream(work, mnist_src, dataset, n_tasks, stream_seed)
    export = work / "reference_data" / f"{stream_dir.name}_test{n_test}.pt"
    if not export.exists():
        import torch

        from data_prep.export_reference import to_reference
        from data_prep.streams import TaskStream

        tr, te = to_reference(TaskStream.load(stream_dir, mnist_dir))
        te = [[param, x[:n_test].clone(), y[:n_test].clone()] for param, x, y in te]
        export.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(export) as tmp:
            torch.save([tr, te], tmp)
    return stream_dir, mnist_dir, export


def clrepro_spec(dataset: str, n_tasks: int, method: str, memory: int, seed: int, samples: int, n_test: int,
                 log_every: int, rng: str, stream_seed: int = 0, protocol: str = "mer2019") -> dict:
    from methods.config import prepare, resolve_run

    config = prepare({"protocol": f"config/protocols/{protocol}.yaml",
        "datasets": [dataset], "methods": [method], "memories": [memory or 500], "seeds": [seed], "device": "cpu",
        "stream_seed": stream_seed, "streams": {dataset: {"kind": STREAM_KIND[dataset], "n_tasks": n_tasks}},
        "overrides": {"samples_per_task": {dataset: samples}, "test_examples_per_task": {dataset: n_test},
                      "log_every": log_every},
        "compat": {"eval_drop_last_test_example": True, "rng": rng}})
    return resolve_run(config, dataset, method, memory, seed)


def reference_argv(spec: dict, export: Path, save_path: Path) -> list[str]:
    """main.py's flags for the cell `spec` (the reference's defaults cover everything not passed)."""
    hp = dict(spec["hparams"])
    for name, value in FIXED.items():
        if name in hp and hp.pop(name) != value:
            raise SystemExit(f"{spec['method']}: {name}={spec['hparams'][name]!r} has no reference (needs {value!r})")
    for name in IGNORED:
        hp.pop(name, None)
    argv = ["--model", spec["method"], "--data_path", str(export.parent), "--data_file", export.name,
            "--samples_per_task", str(spec["samples_per_task"]), "--batch_size", str(spec["batch_size"]),
            "--log_every", str(spec["log_every"]), "--seed", str(spec["seed"]), "--cuda", "no",
            "--n_layers", str(spec["model"]["n_layers"]), "--n_hiddens", str(spec["model"]["n_hiddens"]),
            "--save_path", str(save_path) + "/"]
    if "finetune" in hp:
        argv += ["--finetune", "yes" if hp.pop("finetune") else "no"]
    if spec["method"] in MEMORY_FLAG:
        flag, how = MEMORY_FLAG[spec["method"]]
        argv += [flag, str(spec["memory"] // spec["n_tasks"] if how == "per_task" else spec["memory"])]
    for name in FLAGS:
        if name in hp:
            argv += [f"--{name}", repr(hp.pop(name))]
    if hp:
        raise SystemExit(f"{spec['method']}: no reference flag for {sorted(hp)}")
    return argv


# ---- running ---------------------------------------------------------------------------------------------

def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CLREPRO_THREADS": "1"}


def run_reference(repos: dict, spec: dict, export: Path, out_dir: Path, log: Path | None = None) -> dict:
    """Run the reference main.py for one cell (cached in out_dir/result.json): evaluation log and wall time."""
    cached = out_dir / "result.json"
    if cached.exists():
        return json.loads(cached.read_text())
    repo = Path(repos[REFERENCE_REPO.get(spec["method"], "mer")]).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = reference_argv(spec, export, out_dir)
    if log is None:
        cmd = [sys.executable, str(repo / "main.py"), *argv]
    else:
        cmd = [sys.executable, __file__, "reference-logged", str(repo), str(log), "--", *argv]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=repo, env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"reference {spec['method']} failed:\n{proc.stderr[-3000:]}")
    import torch

    result_t, result_a = torch.load(sorted(glob.glob(str(out_dir / "*.pt")))[-1], weights_only=False)[:2]
    source = SOURCES[REFERENCE_REPO.get(spec["method"], "mer")]
    # main.py's last line ends with " # <seconds>": its own timing of the training loop and its evaluations
    loop = proc.stdout.strip().splitlines()[-1].rsplit(" # ", 1)[-1] if proc.stdout.strip() else ""
    res = {"argv": argv, "source": source, "task": [int(v) for v in result_t.tolist()],
           "acc": result_a.tolist(), "wall_s": time.time() - t0,
           "loop_s": float(loop) if loop.replace(".", "", 1).isdigit() else None}
    write_text(cached, json.dumps(res))
    return res


def run_clrepro(spec: dict, stream_dir: Path, mnist_dir: Path, out: Path) -> dict:
    if not out.exists():
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "methods.train", "--spec", json.dumps(spec), "--stream",
                               str(stream_dir), "--mnist", str(mnist_dir), "--out", str(out)],
                              cwd=ROOT, env=_env(), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"clrepro {spec['method']} failed:\n{proc.stderr[-3000:]}")
        rec = json.loads(out.read_text())
        rec["bench_wall_s"] = time.time() - t0
        write_text(out, json.dumps(rec))
    rec = json.loads(out.read_text())
    return {"task": rec["eval_log"]["task"], "acc": rec["eval_log"]["acc"], "wall_s": rec.get("bench_wall_s"),
            "method_info": rec["method_info"], "timing": rec["timing"]}


def acc(log: dict) -> float:
    """ACC: mean accuracy of the final evaluation (R[T-1] = the last row of the log)."""
    final = log["acc"][-1]
    return sum(final) / len(final)


def max_log_diff(a: dict, b: dict) -> float:
    if a["task"] != b["task"]:
        return math.inf
    return max(abs(x - y) for ra, rb in zip(a["acc"], b["acc"]) for x, y in zip(ra, rb))


def first_difference(a: dict, b: dict, tol: float = 1e-6) -> str:
    """The first evaluation (0 = before training) where some task's accuracy differs by more than float rounding
    of an accuracy, or "none"."""
    for i, (ra, rb) in enumerate(zip(a["acc"], b["acc"])):
        if a["task"][i] != b["task"][i] or any(abs(x - y) > tol for x, y in zip(ra, rb)):
            return str(i)
    return "none"


def small(x: float, signed: bool = False) -> str:
    """A difference: 4 decimals, or scientific notation below 1e-4 (float rounding, not a test image)."""
    if abs(x) < 1e-4:
        return f"{x:+.1e}" if signed else f"{x:.1e}"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


# ---- run: the agreement table ----------------------------------------------------------------------------

def cmd_run(args) -> int:
    from methods.config import load_config, method_hparams

    protocol = load_config(ROOT / "config" / "config.yaml")["_protocol"]
    work = Path(args.work)
    repos = {"mer": args.mer_repo, "gem": args.gem_repo}
    cells = []
    for dataset in args.datasets:
        data = prepare_data(work, args.mnist, dataset, args.n_tasks, args.stream_seed, args.n_test)
        for method in args.methods:
            memories = args.memories if method in MEMORY_FLAG else [0]
            for memory in memories:
                if method_hparams(protocol, method, dataset, memory) is None:
                    continue
                for seed in args.seeds:
                    cells.append((dataset, method, memory, seed, data))

    def name_of(cell):
        dataset, method, memory, seed, _ = cell
        return f"{dataset}_T{args.n_tasks}_n{args.samples}_test{args.n_test}_log{args.log_every}/{method}_mem{memory}_seed{seed}"

    if args.cached_only:   # the table of what earlier invocations finished, nothing run
        cells = [c for c in cells if all((work / "runs" / name_of(c) / f).exists() for f in
                                         ("reference/result.json", "clrepro_reference.json")
                                         + (() if c[1] in SAME_IN_BOTH_MODES else ("clrepro_fast.json",)))]

    def one(cell):
        dataset, method, memory, seed, (stream_dir, mnist_dir, export) = cell
        name = name_of(cell)
        specs = {rng: clrepro_spec(dataset, args.n_tasks, method, memory, seed, args.samples, args.n_test,
                                   args.log_every, rng, args.stream_seed) for rng in ("reference", "fast")}
        ref = run_reference(repos, specs["reference"], export, work / "runs" / name / "reference")
        mine = {"reference": run_clrepro(specs["reference"], stream_dir, mnist_dir,
                                         work / "runs" / name / "clrepro_reference.json")}
        # online, independent, taskinput: one run serves both modes (GEM and EWC draw nothing either, but their
        # reference mode also takes the reference's arithmetic, docs/gem.md): run once
        mine["fast"] = mine["reference"] if method in SAME_IN_BOTH_MODES else run_clrepro(
            specs["fast"], stream_dir, mnist_dir, work / "runs" / name / "clrepro_fast.json")
        print(f"[agree] {name}: reference {acc(ref):.4f} ({ref['wall_s']:.0f}s), rng=reference "
              f"{acc(mine['reference']):.4f} ({mine['reference']['wall_s'] or 0:.0f}s), fast {acc(mine['fast']):.4f}",
              file=sys.stderr, flush=True)
        return {"dataset": dataset, "method": method, "memory": memory, "seed": seed, "reference": ref,
                "clrepro_reference": mine["reference"], "fast": mine["fast"]}

    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(one, cells))
    table = agreement_table(rows, args)
    print(table)
    if args.table:
        write_text(args.table, table)
    return 0


def agreement_table(rows: list[dict], args) -> str:
    head = (f"Streams: {', '.join(args.datasets)}, {args.n_tasks} tasks x {args.samples} examples (stream seed "
            f"{args.stream_seed}), batch 1, evaluation every {args.log_every} examples on the first "
            f"{args.n_test - 1} of {args.n_test} test images per task (divided by {args.n_test}); hyper-parameters "
            f"of config/protocols/mer2019.yaml. ACC = mean accuracy of the final evaluation.\n")
    out = [head, "Per seed. Δ = clrepro rng=reference − reference; max |Δ| log = the largest difference over every "
           "evaluation of every task (1 test image = {:.4f}).\n".format(1 / args.n_test),
           "| method | stream | memory | seed | reference | clrepro rng=reference | Δ | max \\|Δ\\| log "
           "| first differing evaluation | clrepro fast |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref, mine = acc(r["reference"]), acc(r["clrepro_reference"])
        out.append(f"| {r['method']} | {r['dataset']} | {r['memory']} | {r['seed']} | {ref:.4f} | {mine:.4f} | "
                   f"{small(mine - ref, True)} | {small(max_log_diff(r['reference'], r['clrepro_reference']))} | "
                   f"{first_difference(r['reference'], r['clrepro_reference'])} | {acc(r['fast']):.4f} |")
    out += ["", "Per cell, mean ± sample std over the seeds. Within noise: |fast − reference| ≤ 2·SE, "
            "SE = sqrt(s_ref²/n + s_fast²/n).\n",
            "| method | stream | memory | seeds | reference | clrepro rng=reference | max \\|Δ\\| per seed | "
            "clrepro fast | fast − reference | 2·SE | within noise |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    # (rng=reference runs that leave the reference's log, as MER's single-example steps do over whole streams,
    # are judged like fast ones: the row's rng=reference mean against the reference's, within 2·SE)
    cells: dict = {}
    for r in rows:
        cells.setdefault((r["method"], r["dataset"], r["memory"]), []).append(r)
    for (method, dataset, memory), rs in cells.items():
        ref = [acc(r["reference"]) for r in rs]
        mine = [acc(r["clrepro_reference"]) for r in rs]
        fast = [acc(r["fast"]) for r in rs]
        (mr, sr), (mm, sm), (mf, sf) = mean_std(ref), mean_std(mine), mean_std(fast)
        se2 = 2 * math.sqrt(sr ** 2 / len(rs) + sf ** 2 / len(rs))
        worst = max(abs(a - b) for a, b in zip(mine, ref))
        verdict = "n/a (1 seed)" if len(rs) < 2 else ("yes" if abs(mf - mr) <= se2 else "NO")
        if worst > 1e-6 and len(rs) > 1:
            se2_mine = 2 * math.sqrt(sr ** 2 / len(rs) + sm ** 2 / len(rs))
            verdict += (f"; rng=reference {mm - mr:+.4f} "
                        f"{'within' if abs(mm - mr) <= se2_mine else 'OUTSIDE'} 2·SE {se2_mine:.4f}")
        out.append(f"| {method} | {dataset} | {memory} | {len(rs)} | {mr:.4f} ± {sr:.4f} | {mm:.4f} ± {sm:.4f} | "
                   f"{small(worst)} | {mf:.4f} ± {sf:.4f} | {mf - mr:+.4f} | {se2:.4f} | "
                   f"{verdict} |")
    return "\n".join(out) + "\n"


# ---- freeze: the test data of tests/test_reference_rng.py ------------------------------------------------

def _sha(value) -> str:
    return hashlib.sha256(json.dumps(value, separators=(",", ":")).encode()).hexdigest()


def digest(items: list, first: int) -> dict:
    return {"n": len(items), "sha256": _sha(items), "first": items[:first]}


def compact_json(data: dict) -> str:
    """Top-level keys one per line, each run on one line (small, and diffs stay readable)."""
    lines = []
    for key, value in data.items():
        if isinstance(value, dict) and key in ("runs",):
            inner = [f"  {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in value.items()]
            lines.append(f" {json.dumps(key)}: {{\n" + ",\n".join(inner) + "\n }")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def cmd_freeze(args) -> int:
    f = FREEZE
    work = Path(args.work)
    stream_dir, mnist_dir, export = prepare_data(work, args.mnist, f["dataset"], f["n_tasks"], f["stream_seed"],
                                                 f["n_test"])
    repos = {"mer": args.mer_repo, "gem": args.gem_repo}
    out = {"about": "Numbers produced once by the unmodified reference main.py (mattriemer/MER@4b7b9c9; gem: "
                    "facebookresearch/GradientEpisodicMemory@34c6b8e) on clrepro's exported stream, with "
                    "random.shuffle/random.randint wrapped to log the replay draws (one list per replay batch), the "
                    "reservoir's slot per offered example once the memory is full (null: not kept) and Alg. 7's "
                    "batch order; written by `python bench/reference_agreement.py freeze`.",
           "setup": {k: v for k, v in f.items() if k != "methods"}, "runs": {}}
    for method in f["methods"]:
        memory = f["memory"] if method in MEMORY_FLAG else 0
        spec = clrepro_spec(f["dataset"], f["n_tasks"], method, memory, f["seed"], f["samples_per_task"],
                            f["n_test"], f["log_every"], "reference", f["stream_seed"])
        run_dir = work / "freeze" / method
        log = run_dir / "random_calls.json"
        res = run_reference(repos, spec, export, run_dir, log)
        calls = json.loads(log.read_text())
        argv = [{"--data_path": "DIR", "--save_path": "OUT/"}.get(prev, a) for prev, a in zip([""] + res["argv"], res["argv"])]
        out["runs"][method] = {"memory": memory, "argv": argv, "source": res["source"], "task": res["task"],
                               "acc": res["acc"], "draws": digest(calls["draws"], 5),
                               "slots": digest(calls["slots"], 20), "perms": digest(calls["perms"], 1)}
        print(f"[freeze] {method}: ACC {acc(res):.4f}, {len(calls['draws'])} replay batches, "
              f"{len(calls['slots'])} reservoir draws", file=sys.stderr)
    write_text(args.out, compact_json(out))
    return 0


def cmd_reference_logged(repo: str, log_path: str, argv: list[str]) -> int:
    """Run the unmodified reference main.py with its random calls recorded (the RNG is consumed unchanged)."""
    import random
    import runpy

    calls = {"draws": [], "slots": [], "perms": []}
    shuffle, randint = random.shuffle, random.randint

    def logged_shuffle(x):
        shuffle(x)
        frame = sys._getframe(1)
        if frame.f_code.co_name == "getBatch":
            local = frame.f_locals
            if x is local.get("order"):           # for j: shuffle(order); k = order[j]
                if local["j"] == 0:
                    calls["draws"].append([])
                calls["draws"][-1].append(x[local["j"]])
            elif x is local.get("indexes"):       # meralg7: the batch order
                calls["perms"].append(list(x))

    def logged_randint(a, b):
        p = randint(a, b)
        frame = sys._getframe(1)
        if frame.f_code.co_name == "observe":     # the reservoir: p = random.randint(0, self.age)
            calls["slots"].append(p if p < frame.f_locals["self"].memories else None)
        return p

    random.shuffle, random.randint = logged_shuffle, logged_randint
    sys.path.insert(0, repo)
    sys.argv = [str(Path(repo) / "main.py"), *argv]
    runpy.run_path(str(Path(repo) / "main.py"), run_name="__main__")
    write_text(log_path, json.dumps(calls))
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["reference-logged"]:
        sep = argv.index("--")
        return cmd_reference_logged(argv[1], argv[2], argv[sep + 1:])
    p = argparse.ArgumentParser(prog="python bench/reference_agreement.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("run", "freeze"):
        q = sub.add_parser(name)
        q.add_argument("--mer-repo", required=True, help="a checkout of mattriemer/MER (4b7b9c9, the torch 1.4+ port)")
        q.add_argument("--gem-repo", required=True, help="a checkout of facebookresearch/GradientEpisodicMemory (34c6b8e)")
        q.add_argument("--work", required=True, help="scratch directory: data, exports, cached runs")
        q.add_argument("--mnist", default=str(ROOT.parent / "shared" / "data" / "mnist"), help="the four MNIST IDX files")
    q = sub.choices["run"]
    q.add_argument("--datasets", nargs="+", default=["rotations", "permutations"])
    q.add_argument("--n-tasks", type=int, default=20)
    q.add_argument("--samples", type=int, default=1000)
    q.add_argument("--n-test", type=int, default=2000)
    q.add_argument("--log-every", type=int, default=100)
    q.add_argument("--stream-seed", type=int, default=0)
    q.add_argument("--methods", nargs="+", default=["eralg4", "meralg6"])
    q.add_argument("--memories", nargs="+", type=int, default=[200, 500])
    q.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    q.add_argument("--table", help="also write the Markdown table here")
    q.add_argument("--jobs", type=int, default=1, help="cells run at once (a 20-task export is ~4 GB per reference run)")
    q.add_argument("--cached-only", action="store_true", help="only tabulate the cells already finished in --work")
    sub.choices["freeze"].add_argument("--out", required=True)
    args = p.parse_args(argv)
    return cmd_run(args) if args.cmd == "run" else cmd_freeze(args)


if __name__ == "__main__":
    sys.exit(main())
