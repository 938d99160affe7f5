"""Run one grid cell: `python -m methods.train --spec JSON --stream DIR --mnist DIR --out FILE`.

The spec is the resolved run specification (methods.config.resolve_run); Snakemake passes it inline.
For a hand run use `--config FILE --dataset D --method M --memory N --seed S` instead.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from data_prep.errors import ClreproError


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m methods.train")
    p.add_argument("--spec", help="resolved run spec as JSON (what Snakemake passes)")
    p.add_argument("--config", help="workflow config file (alternative to --spec)")
    p.add_argument("--dataset")
    p.add_argument("--method")
    p.add_argument("--memory", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stream", required=True, help="stream directory (with manifest.json)")
    p.add_argument("--mnist", required=True, help="MNIST directory (with manifest.json)")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=int(os.environ.get("CLREPRO_THREADS", "1")))
    return p.parse_args(argv)


def load_spec(args) -> dict:
    if args.spec:
        return json.loads(args.spec)
    if not (args.config and args.dataset and args.method):
        raise ClreproError("pass --spec, or --config with --dataset and --method")
    from .config import load_config, resolve_run
    return resolve_run(load_config(args.config), args.dataset, args.method, args.memory, args.seed)


def check_stream(manifest: dict, spec: dict, where: str) -> None:
    """The stream on disk must be the one the spec names (its key covers the stream definition)."""
    from data_prep.streams import StreamDef

    have = {**StreamDef.from_manifest(manifest).spec(), "stream_seed": manifest["stream_seed"]}
    want = {**spec["stream_def"], "stream_seed": spec["stream_seed"]}
    if have != want:
        raise ClreproError(f"stream {where} is {have}, but the run asks for {want}; rebuild it with snakemake")


def skip_tasks(stream, k: int):
    """The stream without its first k tasks (a protocol's cross-validation tasks, e.g. A-GEM's T_CV = 3)."""
    if k == 0:
        return stream
    manifest = {**stream.manifest, "task_params": stream.manifest["task_params"][k:], "skipped_tasks": k}
    return dataclasses.replace(stream, maps=stream.maps[k:], label_maps=stream.label_maps[k:], manifest=manifest)


def build_run(spec: dict, stream, device):
    """(learner, schedule) for one run. The order is part of what a seed means: the schedule is drawn first, then
    the net is initialised from the same torch generator, so any other order is another run of the same seed."""
    from . import protocol, registry
    from .base import Context

    protocol.seed_everything(spec["seed"])
    pools = [stream.task_split("train", t)[0] for t in range(stream.n_tasks)]
    schedule = protocol.make_schedule(stream.n_tasks, len(stream.train_labels), spec["samples_per_task"], pools,
                                      spec.get("task_images", "independent"))
    ctx = Context(n_inputs=stream.maps.shape[1], n_outputs=int(stream.train_labels.max()) + 1,
                  n_tasks=stream.n_tasks, n_layers=spec["model"]["n_layers"], n_hiddens=spec["model"]["n_hiddens"],
                  memory=spec["memory"], batch_size=spec["batch_size"], samples_per_task=spec["samples_per_task"],
                  device=device, init=spec["model"].get("init"))
    return registry.build(spec["method"], ctx, spec["hparams"]), schedule


def main(argv=None) -> int:
    args = parse(argv)
    # numpy's BLAS (GEM's Gram matrix, quadprog's inputs) gets the job's threads too, as Snakemake sets for its
    # jobs; a hand run would otherwise spin one BLAS thread per core against torch's (GEM step 88 -> 33 ms on a
    # busy 2-core machine, identical parameters). Before torch/numpy are imported, or it has no effect.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    try:
        spec = load_spec(args)
        import torch

        from data_prep.streams import TaskStream

        from . import device as devices
        from . import protocol, record, registry

        device = devices.resolve(spec["device"])
        devices.make_deterministic(device, args.threads)
        stream = TaskStream.load(Path(args.stream), Path(args.mnist))
        check_stream(stream.manifest, spec, args.stream)
        stream = skip_tasks(stream, spec.get("skip_tasks", 0))
        registry.get(spec["method"])  # unknown names fail before any work
        learner, schedule = build_run(spec, stream, device)
        print(f"[train] {spec['dataset']} {spec['method']} mem{spec['memory']} seed{spec['seed']} on {device} "
              f"(torch {torch.__version__}, {torch.get_num_threads()} threads)", file=sys.stderr, flush=True)
        log, timing = protocol.run(learner, stream, schedule, spec, device)
        rec = record.build(spec, log, timing, learner.info(), stream.manifest, device)
        record.write(args.out, rec)
        m = rec["metrics"]
        print(f"[train] ACC {m['ACC']:.4f} BWT(T-1) {m['BWT']['paper']:+.4f} FWT(T-1) {m['FWT']['paper']:+.4f} "
              f"LA {m['LA']:.4f}; {timing['examples_per_s']:.0f} ex/s; wrote {args.out}", file=sys.stderr)
    except ClreproError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
