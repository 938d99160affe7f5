# Shared helpers: the validated config, the grid and the paths. Imported at parse time, torch-free.
import json
import os
import sys

sys.path.insert(0, workflow.basedir)
envvars:
    "PATH",


# Rules call `python`: make it the interpreter running Snakemake (the environment), however it was started.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

from methods.config import grid, prepare, resolve_run  # noqa: E402
from methods.registry import METHODS  # noqa: E402

prepare(config)  # validates against config/schema.yaml (fills defaults) and loads the protocol
GRID = grid(config)


wildcard_constraints:
    dataset="|".join(sorted(config["streams"])),
    method="|".join(METHODS),
    memory=r"\d+",
    seed=r"\d+",


RUN = "{dataset}/{method}/mem{memory}/seed{seed}"  # one grid cell; results/runs/<RUN>.json


def run_records():
    return [f"results/runs/{c['dataset']}/{c['method']}/mem{c['memory']}/seed{c['seed']}.json" for c in GRID]


def run_spec(wildcards):
    """The resolved run spec (a param, so a changed hyper-parameter reruns exactly the affected jobs)."""
    spec = resolve_run(config, wildcards.dataset, wildcards.method, int(wildcards.memory), int(wildcards.seed))
    return json.dumps(spec, sort_keys=True)


def stream_args(wildcards):
    s = config["streams"][wildcards.dataset]
    return f"--kind {s['kind']} --n-tasks {s['n_tasks']} --min-deg {s.get('min_deg', 0)} --max-deg {s.get('max_deg', 180)}"


def mnist_source_arg():
    src = config["mnist"]["source_dir"]
    args = f"--source-dir {src}" if src else ""
    return args if config["mnist"]["download"] else args + " --no-download"
