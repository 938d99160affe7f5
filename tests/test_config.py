"""Configuration is validated once, with one-line errors that name the fix; the grid is built from data."""
from __future__ import annotations

import copy

import pytest
import yaml

from data_prep.errors import ClreproError
from methods import registry
from methods.config import ROOT, grid, load_config, prepare, resolve_run

BASE = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def cfg(**changes):
    config = copy.deepcopy(BASE)
    config.update(changes)
    return prepare(config)


def assert_one_line(err, *fragments):
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_default_and_paper_configs_are_valid():
    for name in ("config.yaml", "paper.yaml"):
        path = ROOT / "config" / name
        if path.exists():
            config = load_config(path)
            assert grid(config)


def test_unknown_method_is_rejected():
    with pytest.raises(ClreproError) as err:
        cfg(methods=["online", "gemm"])
    assert_one_line(err, "methods/1", "gemm")


def test_unknown_dataset_is_rejected():
    with pytest.raises(ClreproError) as err:
        cfg(datasets=["rotations", "cifar100"])
    assert_one_line(err, "cifar100", "streams")


@pytest.mark.parametrize("key,value,where", [
    ("seeds", [-1], "seeds/0"),
    ("memories", [0], "memories/0"),
    ("device", "tpu", "device"),
    ("stream_seed", "zero", "stream_seed"),
    ("typo_key", 1, "typo_key"),
])
def test_invalid_values_are_rejected(key, value, where):
    with pytest.raises(ClreproError) as err:
        cfg(**{key: value})
    assert_one_line(err, where)


def test_registry_rejects_unknown_names_and_hyper_parameters():
    with pytest.raises(ClreproError, match="unknown method 'sgd'"):
        registry.get("sgd")
    with pytest.raises(ClreproError, match=r"unknown hyper-parameter\(s\) \['lrr'\]"):
        registry.make_hparams("online", {"lrr": 0.1})
    with pytest.raises(ClreproError, match="needs hyper-parameter"):
        registry.make_hparams("ewc", {"lr": 0.1})


def test_memory_free_methods_run_once_and_null_cells_are_skipped():
    config = cfg(methods=["online", "gem"], memories=[5120, 500, 200], seeds=[0, 1],
                 datasets=["rotations", "many_permutations"])
    cells = grid(config)
    online = [c for c in cells if c["method"] == "online"]
    assert {c["memory"] for c in online} == {0} and len(online) == 4
    gem_many = {c["memory"] for c in cells if c["method"] == "gem" and c["dataset"] == "many_permutations"}
    assert gem_many == {5120, 500}  # the MER scripts have no 200-memory Many Permutations runs
    assert len(cells) == len({tuple(c.values()) for c in cells})


def test_resolved_spec_carries_protocol_hparams_and_overrides():
    config = cfg(hparams={"gem": {"qp_ridge": 0.0}})
    spec = resolve_run(config, "permutations", "gem", 500, 3)
    assert spec["hparams"]["lr"] == 0.01 and spec["hparams"]["memory_strength"] == 1.0
    assert spec["hparams"]["qp_ridge"] == 0.0
    assert spec["samples_per_task"] == BASE["overrides"]["samples_per_task"]["permutations"]
    assert spec["batch_size"] == 1 and spec["seed"] == 3 and spec["n_tasks"] == 20
    with pytest.raises(ClreproError, match="by_memory.1000"):
        resolve_run(config, "rotations", "gem", 1000, 0)


def test_cuda_request_without_gpu_is_a_clear_error(monkeypatch):
    import torch

    from methods import device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ClreproError, match="set device: auto or device: cpu"):
        device.resolve("cuda")
    assert device.resolve("auto").type == "cpu"
