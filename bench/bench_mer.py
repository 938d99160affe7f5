"""Examples/s of the replay methods on real MNIST Rotations: fast engines vs the reference-style eager code.

    cpuslot python -m bench.bench_mer [--stream data/streams/rotations] [--mnist data/mnist] [--seconds 8]

For meralg1/6/7 and eralg4 at the protocol's 5120- and 500-memory Rotations hyper-parameters: the
memory is first filled with stream examples (the steady state of a run, where every draw is full
size), then the clock runs over fresh examples. MER is timed with each engine (c, torch) and with
bench/mer_eager.py (autograd + deepcopy(state_dict), as the MER code); eralg4 has one implementation.
CPU runs use one thread; CUDA is added when available (torch engine and eager only).
"""
from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch

from bench.mer_eager import build_eager
from data_prep.streams import TaskStream
from methods import registry
from methods.base import Context
from methods.config import load_config, resolve_run

METHODS = ["meralg1", "meralg6", "meralg7", "eralg4"]


def examples(stream: TaskStream, n: int, device):
    x = torch.from_numpy(stream.task_images("train", 3, np.arange(n))).float().div_(255).to(device)
    return x, torch.from_numpy(stream.train_labels[:n]).long().to(device)


def time_one(learner, x, y, seconds: float, max_examples: int) -> tuple[float, int]:
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    learner.observe(x[0:1], 0, y[0:1])      # warm-up (first-call imports, kernel load)
    sync()
    t0, n = time.perf_counter(), 0
    while n < max_examples and (n < 2 or time.perf_counter() - t0 < seconds):
        i = 1 + n % (len(x) - 1)
        learner.observe(x[i:i + 1], 0, y[i:i + 1])
        n += 1
    sync()
    return n / (time.perf_counter() - t0), n


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--stream", default="data/streams/rotations")
    p.add_argument("--mnist", default="data/mnist")
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--memories", default="5120,500")
    args = p.parse_args()
    torch.set_num_threads(1)
    stream = TaskStream.load(Path(args.stream), Path(args.mnist))
    config = load_config(args.config)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s); ex/s = stream examples per second")
    print(f"{'device':6} {'method':8} {'mem':>5} {'engine':6} {'ex/s':>9} {'n':>5}  hparams")
    for device in devices:
        fill_x, fill_y = examples(stream, 5200, device)
        for mem in [int(m) for m in args.memories.split(",")]:
            for method in METHODS:
                hp = resolve_run(config, "rotations", method, mem, 0)["hparams"]
                ctx = Context(784, 10, 20, 2, 100, mem, 1, 1000, device)
                kinds = (["c"] if device.type == "cpu" else []) + ["torch", "eager"] if method.startswith("mer") else ["-"]
                rates = {}
                for kind in kinds:
                    random.seed(0)
                    torch.manual_seed(0)
                    if kind == "eager":
                        learner = build_eager(method, ctx, hp)
                    else:
                        learner = registry.build(method, ctx, hp if kind == "-" else {**hp, "engine": kind})
                    for i in range(mem):    # fill the memory without training
                        learner.memory.add(fill_x[i % len(fill_x)], fill_y[i % len(fill_y)], 0)
                    rate, n = time_one(learner, fill_x, fill_y, args.seconds, 4000)
                    rates[kind] = rate
                    shown = ", ".join(f"{k}={v}" for k, v in hp.items())
                    print(f"{device.type:6} {method:8} {mem:>5} {kind:6} {rate:9.1f} {n:>5}  {shown}", flush=True)
                if "eager" in rates:
                    for kind in kinds[:-1]:
                        print(f"{'':6} {method:8} {mem:>5} {kind:6} speed-up over eager: "
                              f"{rates[kind] / rates['eager']:.1f}x", flush=True)


if __name__ == "__main__":
    main()
