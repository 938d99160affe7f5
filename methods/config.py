"""Configuration: validated once at the edge, then resolved into one plain `RunSpec` dict per grid cell.

Torch-free at import, since the Snakefile imports it at parse time to build the grid; only `check_hparams`
imports the methods (torch), once per distinct set of hyper-parameters.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
from pathlib import Path

import jsonschema
import yaml

from data_prep.errors import ClreproError, one_line_errors
from data_prep.streams import stream_def

ROOT = Path(__file__).resolve().parent.parent
CONFIG_SCHEMA = ROOT / "config" / "schema.yaml"
PROTOCOL_SCHEMA = ROOT / "config" / "protocols" / "schema.yaml"


def _with_defaults(validator_class):
    """Fill schema defaults while validating (the jsonschema FAQ recipe, as snakemake.utils.validate does)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def validate(instance: dict, schema_path: Path, what: str) -> dict:
    """Validate (and fill defaults into) `instance`; raise a one-line ClreproError naming the bad key."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    error = jsonschema.exceptions.best_match(_Validator(schema).iter_errors(instance))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ClreproError(f"invalid {what} at {where}: {error.message} (schema: {Path(schema_path).name})")
    return instance


def load_yaml(path: str | Path) -> dict:
    """A YAML mapping; a missing file or a syntax error is one line naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise ClreproError(f"config file {path} not found; pass an existing file (e.g. config/config.yaml)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ClreproError(f"{where}: invalid YAML ({problem}); fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ClreproError(f"{path} must be a YAML mapping of config keys, not a {type(data).__name__}")
    return data


DEFAULT_CONFIG = "config/config.yaml"


def _find(reference: str, relative_to: Path) -> Path:
    """A `base:` path: absolute, or relative to the file that names it."""
    path = Path(reference)
    return path if path.is_absolute() else relative_to / path


def load_layered(path: str | Path, _chain: tuple = ()) -> dict:
    """One config file, complete on its own unless it says `base: FILE`.

    With `base:`, every top-level key the file sets replaces the base's value whole (so `overrides: {}`
    really clears the base's overrides); keys it does not set come from the base. Layering is therefore
    always on purpose and visible in the file; nothing is merged in behind the user's back.
    """
    path = Path(path)
    if path.resolve() in _chain:
        raise ClreproError(f"{path}: `base:` chain loops back to itself; remove the cycle")
    data = load_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ClreproError(f"{path}: `base:` must be the path of another config file, not {base!r}")
    return {**load_layered(_find(base, path.parent), _chain + (path.resolve(),)), **data}


def cli_scalar(value):
    """A `--config` value's nested scalars typed as Snakemake types top-level ones (int, float, true/false).

    Snakemake parses `seeds=[0,1]` with YAML's BaseLoader, so the list arrives as ['0', '1'] while `seed=0`
    arrives as 0; without this, every list of numbers given on the command line fails the schema.
    """
    if isinstance(value, dict):
        return {k: cli_scalar(v) for k, v in value.items()}
    if isinstance(value, list):
        return [cli_scalar(v) for v in value]
    if not isinstance(value, str):
        return value
    for parse in (int, float):
        try:
            return parse(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value.lower(), value)


def merge_cli(config: dict, cli: dict) -> dict:
    """`--config key=value` on top: nested keys merge (as Snakemake does), everything else replaces."""
    cli = cli_scalar(cli)
    out = copy.deepcopy(config)
    for key, value in cli.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_cli(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def workflow_config(configfiles: list, cli: dict | None = None, root: Path = ROOT) -> dict:
    """The config a Snakemake invocation asked for, exactly.

    No `--configfile`: the default grid. One or more: those files only, later ones replacing earlier ones'
    top-level keys; the default grid is NOT layered underneath (Snakemake's own merge would silently carry
    its reduced sizes into every other grid). `--config key=value` applies last.
    """
    files = [Path(f) for f in configfiles] or [root / DEFAULT_CONFIG]
    config: dict = {}
    for f in files:
        config.update(load_layered(f))
    return merge_cli(config, cli or {})


def prepare(config: dict) -> dict:
    """Validate a workflow config and attach its validated protocol under `_protocol`."""
    validate(config, CONFIG_SCHEMA, "config")
    for name, entry in config["streams"].items():
        stream_def(name, entry)   # a class split's classes, a rotation's angles: one line naming the fix
    for dataset in config["datasets"]:
        if dataset not in config["streams"]:
            raise ClreproError(f"unknown dataset {dataset!r}; use one of {sorted(config['streams'])} "
                               f"or define it under `streams` in the config")
    protocol_path = Path(config["protocol"])
    if not protocol_path.is_absolute() and not protocol_path.exists():
        protocol_path = ROOT / protocol_path
    protocol = validate(load_yaml(protocol_path), PROTOCOL_SCHEMA, f"protocol {protocol_path}")
    for method in config["methods"]:
        if method not in protocol["hparams"]:
            raise ClreproError(f"protocol {protocol['name']} has no hyper-parameters for method {method!r}; "
                               f"add them under hparams.{method} in {protocol_path}")
    config["_protocol"] = protocol
    return config


def visible_gpus(env=os.environ) -> int:
    """GPUs this machine would give a job (tools/gpu_slot's count: CUDA_VISIBLE_DEVICES, else nvidia-smi)."""
    from tools.gpu_slot import gpu_ids

    return len(gpu_ids("auto", dict(env)))


def resolve_device(config: dict, *, local: bool, gpus: int | None = None) -> str:
    """The device the runs will use, fixed before anything runs: `cpu` or `cuda` on this machine.

    Resolving `auto` here makes `auto` and `cpu` the same runs on a CPU machine, and lets `device: cuda`
    without a GPU fail once, at parse time, instead of in every job. On a cluster (local=False) this
    machine cannot see the compute nodes' GPUs: the request is kept as it is (each job resolves `auto`
    itself, and its record says which device it ran on).
    """
    request = config["device"]
    if not local:
        return request
    n = visible_gpus() if gpus is None else gpus
    if request == "cuda" and n == 0:
        raise ClreproError("device: cuda was asked for but this machine has no visible GPU (nvidia-smi lists "
                           "none, or CUDA_VISIBLE_DEVICES is empty); set device: auto or device: cpu")
    if request == "auto":
        return "cuda" if n > 0 else "cpu"
    return request


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    """A config file (with its `base:` chain), validated, as `python -m methods.train --config` reads it."""
    config = load_layered(path)
    config.update(overrides or {})
    return prepare(config)


def uses_memory(protocol: dict, method: str) -> bool:
    """A method sits on the memory axis iff its protocol hyper-parameters are keyed by memory size."""
    return any(isinstance(v, dict) and "by_memory" in v for v in protocol["hparams"][method].values())


def method_hparams(protocol: dict, method: str, dataset: str, memory: int) -> dict | None:
    """Protocol hyper-parameters for one cell; None where the protocol marks the cell as not run."""
    table = protocol["hparams"][method]
    if dataset not in table:
        raise ClreproError(f"protocol {protocol['name']} has no hparams.{method}.{dataset}; add them to the protocol file")
    values = dict(table.get("all", {}))
    cell = table[dataset]
    if "by_memory" in cell:
        by_memory = {int(k): v for k, v in cell["by_memory"].items()}
        if memory not in by_memory:
            raise ClreproError(f"protocol {protocol['name']} has no hparams.{method}.{dataset}.by_memory.{memory}; "
                               f"use a memory size in {sorted(by_memory)} or add one")
        if by_memory[memory] is None:
            return None
        values.update(by_memory[memory])
    else:
        values.update(cell)
    return values


def grid(config: dict) -> list[dict]:
    """Every (dataset, method, memory, seed) cell to run; memory-free methods run once with memory 0."""
    protocol = config["_protocol"]
    cells = []
    for dataset in config["datasets"]:
        for method in config["methods"]:
            memories = sorted(config["memories"], reverse=True) if uses_memory(protocol, method) else [0]
            for memory in memories:
                if method_hparams(protocol, method, dataset, memory) is None:
                    continue
                for seed in config["seeds"]:
                    cells.append({"dataset": dataset, "method": method, "memory": memory, "seed": seed})
    return cells


def resolve_run(config: dict, dataset: str, method: str, memory: int, seed: int) -> dict:
    """The complete, self-describing specification of one run (what the run record stores)."""
    protocol = config["_protocol"]
    if dataset not in config["streams"]:
        raise ClreproError(f"unknown dataset {dataset!r}; use one of {sorted(config['streams'])}")
    hparams = method_hparams(protocol, method, dataset, memory)
    if hparams is None:
        raise ClreproError(f"protocol {protocol['name']} does not run {method} on {dataset} with memory {memory}")
    hparams.update(config["hparams"].get(method, {}))
    overrides = config["overrides"]
    stream = config["streams"][dataset]
    samples = overrides.get("samples_per_task", {}).get(dataset, protocol["samples_per_task"].get(dataset))
    if samples is None:
        raise ClreproError(f"protocol {protocol['name']} has no samples_per_task for {dataset}; add it or an override")
    compat = {**protocol.get("compat", {}), **config["compat"]}
    if compat.pop("rng", "fast") == "reference":
        # absent = fast, so fast runs keep their spec keys; "reference" reaches the method as its `rng` hparam
        compat["rng"] = hparams["rng"] = "reference"
        _check_reference_rng(method)
    sizes = {
        "batch_size": overrides.get("batch_size", protocol["batch_size"]),
        "log_every": overrides.get("log_every", protocol["log_every"]),
        "samples_per_task": samples,
        "test_examples_per_task": overrides.get("test_examples_per_task", {}).get(
            dataset, protocol["test_examples_per_task"]),
        # tasks [skip_tasks, stream n_tasks) are trained and scored: n_tasks counts those
        "skip_tasks": overrides.get("skip_tasks", protocol["skip_tasks"]),
    }
    # only where not the default `first`, so every record made before the option keeps its key
    test_subset = {"test_subset": "spread"} if overrides.get("test_subset", "first") == "spread" else {}
    skip = sizes["skip_tasks"]
    n_tasks = stream["n_tasks"] - skip
    if n_tasks < 1:
        raise ClreproError(f"protocol {protocol['name']} skips the first {skip} tasks but stream "
                           f"{dataset} has only {stream['n_tasks']}; give the stream more tasks")
    protocol_sizes = {"batch_size": protocol["batch_size"], "log_every": protocol["log_every"],
                      "samples_per_task": protocol["samples_per_task"].get(dataset),
                      "test_examples_per_task": protocol["test_examples_per_task"],
                      "skip_tasks": protocol["skip_tasks"]}
    check_hparams(method, hparams, memory, n_tasks)
    return {
        "dataset": dataset, "method": method, "memory": memory, "seed": seed,
        "stream_seed": config["stream_seed"], "n_tasks": n_tasks,
        "stream_def": stream_def(dataset, stream).spec(),
        "protocol": protocol["name"],
        # absent = independent (each task its own draw), so the runs that predate the option keep their keys
        **({"task_images": protocol["task_images"]} if protocol.get("task_images", "independent") != "independent"
           else {}),
        "lca_batches": protocol["lca_batches"],
        **sizes, **test_subset,
        # the sizes this run changed from its protocol's (name -> protocol value); empty = full protocol size
        "reduced": {k: v for k, v in protocol_sizes.items() if sizes[k] != v},
        "model": dict(protocol["model"]),
        "hparams": hparams,
        "compat": {"eval_drop_last_test_example": False, **compat},
        "device": config.get("_device", config["device"]),
    }


def _check_reference_rng(method: str) -> None:
    """compat.rng: reference needs a method with a reference RNG mode (an `rng` hyper-parameter); whether its
    other hyper-parameters allow it is check_hparams' job."""
    import dataclasses

    from .registry import get

    if "rng" not in {f.name for f in dataclasses.fields(get(method).Hparams)}:
        raise ClreproError(f"compat.rng: reference reproduces the GEM/MER reference code's random draws, and "
                           f"{method} has no such reference; leave {method} out of this grid or use compat.rng: fast")


def check_hparams(method: str, hparams: dict, memory: int, n_tasks: int) -> None:
    """Names, types and allowed values of a run's hyper-parameters, and whether its memory holds what they
    need, checked when the grid is resolved: a typo in a protocol file or a --config override, or a memory too
    small for the stream, stops the workflow with one line before any job runs."""
    _check_hparams(method, json.dumps(hparams, sort_keys=True), memory, n_tasks)


@functools.lru_cache(maxsize=None)
def _check_hparams(method: str, canonical: str, memory: int, n_tasks: int) -> None:
    from .registry import check_cell   # imports the method's module (torch): once per grid, not per cell

    check_cell(method, json.loads(canonical), memory, n_tasks)


def spec_key(spec: dict) -> str:
    """Content key of a run: the first 12 hex digits of the sha256 of its canonical spec.

    The spec holds exactly what determines the results, so a changed spec writes a new record beside the
    old one and going back finds the old one again.
    """
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


RECORD = "results/runs/{protocol}/{dataset}/{method}/mem{memory}/seed{seed}/{key}.json"


def record_path(spec: dict) -> str:
    return RECORD.format(key=spec_key(spec), **spec)


def grid_record_paths(config: dict) -> list[str]:
    """Every record a prepared config (device resolved) names, in grid order."""
    return [record_path(resolve_run(config, c["dataset"], c["method"], c["memory"], c["seed"])) for c in grid(config)]


def configfiles_in(args: list[str]) -> list[str]:
    """The files a Snakemake command line passes with --configfile/--configfiles (nargs='+', as Snakemake)."""
    files, taking = [], False
    for arg in args:
        if arg in ("--configfile", "--configfiles"):
            taking = True
        elif arg.startswith(("--configfile=", "--configfiles=")):
            files.append(arg.split("=", 1)[1])
            taking = False
        elif arg.startswith("-"):
            taking = False
        elif taking:
            files.append(arg)
    return files


def check_configfiles(args: list[str]) -> None:
    """What Snakemake reads before our Snakefile runs, checked first so its errors are one line too."""
    for name in configfiles_in(args):
        if not Path(name).exists() and not Path(name).suffix:
            raise ClreproError(f"config file {name} not found; if {name!r} is a target, put it before "
                               f"--configfile, which takes every following word as a config file")
        load_layered(name)


@one_line_errors
def main(argv=None) -> int:
    """`python -m methods.config check-args SNAKEMAKE_ARGS...` (what ./clrepro runs before Snakemake)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "check-args":
        raise ClreproError("usage: python -m methods.config check-args [snakemake args]")
    check_configfiles(args[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
