"""Configuration: validated once at the edge, then resolved into one plain `RunSpec` dict per grid cell.

Torch-free on purpose: the Snakefile imports it at parse time to build the grid.
"""
from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

from data_prep.errors import ClreproError

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
    path = Path(path)
    if not path.exists():
        raise ClreproError(f"{path} not found; pass an existing file")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ClreproError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None


def prepare(config: dict) -> dict:
    """Validate a workflow config and attach its validated protocol under `_protocol`."""
    validate(config, CONFIG_SCHEMA, "config")
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


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    config = load_yaml(path)
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
    return {
        "dataset": dataset, "method": method, "memory": memory, "seed": seed,
        "stream_seed": config["stream_seed"], "n_tasks": stream["n_tasks"],
        "protocol": protocol["name"],
        "batch_size": overrides.get("batch_size", protocol["batch_size"]),
        "log_every": overrides.get("log_every", protocol["log_every"]),
        "samples_per_task": samples,
        "test_examples_per_task": overrides.get("test_examples_per_task", {}).get(
            dataset, protocol["test_examples_per_task"]),
        "model": dict(protocol["model"]),
        "hparams": hparams,
        "compat": {"eval_drop_last_test_example": False, **compat},
        "device": config["device"],
    }
