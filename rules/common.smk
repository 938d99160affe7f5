# Shared helpers: the validated config, the grid and the paths. Imported at parse time, torch-free.
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, workflow.basedir)
envvars:
    "PATH",


# Rules call `python`: make it the interpreter running Snakemake (the environment), however it was started.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

from data_prep.errors import ClreproError  # noqa: E402
from data_prep.streams import stream_def  # noqa: E402
from methods.config import RECORD, grid, prepare, record_path, resolve_device, resolve_run, workflow_config  # noqa: E402
from methods.registry import METHODS  # noqa: E402
from tools.job_errors import failed_summary, report_failure, sizes_line  # noqa: E402


def fail(exc):
    """A parse-time problem is one line on stderr and exit 1, before any job starts (no traceback)."""
    sys.stdout.flush()
    os.write(2, f"error: {exc}\n".encode())  # straight to fd 2: Snakemake wraps sys.stderr in its logger
    os._exit(1)  # SystemExit would be caught and re-printed by Snakemake with its own context lines


try:
    # Exactly the config that was asked for: the --configfile files (or config/config.yaml), then --config.
    _asked = workflow_config(workflow.config_settings.configfiles, workflow.config_settings.config, Path(workflow.basedir))
    config.clear()
    config.update(_asked)
    prepare(config)  # validates against config/schema.yaml (fills defaults) and loads the protocol
    # on a cluster (a remote executor, or inside one of its jobs) the GPUs are not this machine's
    config["_device"] = resolve_device(config, local=workflow.local_exec and not workflow.remote_exec)
    GRID = grid(config)
    for _cell in GRID:
        _cell["spec"] = resolve_run(config, _cell["dataset"], _cell["method"], _cell["memory"], _cell["seed"])
        _cell["record"] = record_path(_cell["spec"])
except ClreproError as _exc:
    fail(_exc)
RECORDS = {c["record"]: c["spec"] for c in GRID}


wildcard_constraints:
    protocol=r"[A-Za-z0-9_.-]+",
    dataset="|".join(sorted(config["streams"])),
    method="|".join(METHODS),
    memory=r"\d+",
    seed=r"\d+",
    key=r"[0-9a-f]{12}",


RUN = RECORD.removeprefix("results/runs/").removesuffix(".json")  # one grid cell and its spec key


def run_records():
    return list(RECORDS)


def run_spec(wildcards):
    """The resolved run spec whose key names this record (a record of another config is not retrained)."""
    path = RECORD.format(**wildcards)
    if path not in RECORDS:
        fail(ClreproError(f"{path} is not a run of the current config (its spec key differs); "
                          f"pass the config that made it with --configfile"))
    return json.dumps(RECORDS[path], sort_keys=True)


def train_data(wildcards):
    """The data a training job reads; none for a record that exists and is not forced to rerun."""
    path = RECORD.format(**wildcards)
    settings = workflow.dag_settings
    forced = settings.forceall or settings.forcetargets or bool({"train", path} & set(settings.forcerun))
    if os.path.exists(path) and not forced:
        return {}
    return {"stream": f"data/streams/{wildcards.dataset}/manifest.json", "mnist": "data/mnist/manifest.json"}


# Longest jobs first (`priority`): Snakemake otherwise starts them in DAG order, and a 400 s DGR job started
# last ran alone for 4 minutes of the default grid's 21 (one of two cores idle). TRAIN_SECONDS is a hint
# only: each method's training seconds on the default grid (2 cores, benchmarks/train/), per 1000 examples
# per task and per stream, so other protocols are ordered roughly right; it never changes what runs.
TRAIN_SECONDS = {"dgr": 280, "gem": 245, "agem": 100, "meralg1": 100, "taagem": 95, "eralg5": 50, "ewc": 40,
                 "eralg4": 34, "meralg7": 30, "online": 27, "taskinput": 27, "independent": 21, "meralg6": 18}


def train_priority(wildcards):
    """Expected seconds (a relative scale): method cost times examples per task over the default's 1000."""
    spec = RECORDS.get(RECORD.format(**wildcards))
    scale = spec["samples_per_task"] / 1000 if spec else 1
    return round(TRAIN_SECONDS.get(wildcards.method, 50) * scale)


def stream_args(wildcards):
    """The stream's definition as `python -m data_prep stream` arguments; the options beyond kind, tasks and
    degrees only where set, so an older stream's command (a rerun trigger) is unchanged."""
    s = config["streams"][wildcards.dataset]
    extra = "".join(f" {shlex.quote(a)}" for a in stream_def(wildcards.dataset, s).extra_args())
    degrees = f"--min-deg {s.get('min_deg', 0)} --max-deg {s.get('max_deg', 180)}"
    return f"--kind {s['kind']} --n-tasks {s['n_tasks']} {degrees}{extra}"


def mnist_source_arg():
    src = config["mnist"]["source_dir"]
    args = f"--source-dir {src} " if src else ""
    return args + ("--cache data/download" if config["mnist"]["download"] else "--no-download")


WORKFLOW_START = time.time()
CONFIG_FILES = [str(f) for f in workflow.config_settings.configfiles] or ["config/config.yaml"]


def onstart_note():
    reduced = sizes_line(list(RECORDS.values()))
    print(f"clrepro: config {' + '.join(CONFIG_FILES)}; {len(RECORDS)} runs on {config['_device']}", file=sys.stderr)
    if reduced:
        print(reduced, file=sys.stderr)


def onsuccess_note():
    if os.path.exists("results/plots/summary.png"):
        name = config["_protocol"]["name"]
        print(f"clrepro: done ({len(RECORDS)} run records under results/runs/{name}/).\n"
              f"  summary figure: results/plots/summary.png\n"
              f"  tables, one per stream: results/tables/main_paper.md (also .tex, .csv; main_code.* divides by T)\n"
              f"  the paper's own table: results/tables/paper_{name}.md\n"
              f"  forgetting plots: results/plots/acc_matrix_*.png, curves_*.png, acc_vs_memory.png\n"
              f"  HTML report: ./clrepro reproduce --report report.html", file=sys.stderr)


def onerror_summary():
    report_failure(failed_summary("logs", WORKFLOW_START - 1))
