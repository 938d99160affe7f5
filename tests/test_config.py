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


@pytest.mark.parametrize("method,values,message", [
    ("gem", {"lr": 0.1, "memory_strength": 0.5, "projected": "current"},
     "gem.projected must be one of ['gradient', 'zero'], not 'current'"),
    ("gem", {"lr": 0.1, "memory_strength": 0.5, "margin_mode": "paper"}, "gem.margin_mode must be one of"),
    ("gem", {"lr": "0.1", "memory_strength": 0.5}, "gem.lr must be a number, not '0.1'"),
    ("gem", {"lr": 0.1, "memory_strength": True}, "gem.memory_strength must be a number, not True"),
    ("gem", {"lr": 0.1, "memory_strength": 0.5, "patterns_per_experience": 2.5},
     "gem.patterns_per_experience must be an integer or null, not 2.5"),
    ("agem", {"lr": 0.1, "sample_size": 0}, "agem sample_size must be >= 1"),
    ("eralg4", {"replay_draw": "sometimes"}, "eralg4.replay_draw must be one of"),
    ("meralg1", {"engine": "cuda"}, "meralg1.engine must be one of ['auto', 'c', 'torch']"),
    ("meralg6", {"meralg6_extra_draw": 1}, "meralg6.meralg6_extra_draw must be a boolean, not 1"),
    ("dgr", {"lr": 0.1, "replay_targets": "argmax"}, "dgr.replay_targets must be one of ['hard', 'soft']"),
    ("taagem", {"lr": 0.1, "eviction": "lru"}, "taagem.eviction must be one of ['fifo', 'furthest', 'random']"),
    ("online", {"lr": 0.1, "rng": "numpy"}, "online.rng must be one of ['fast', 'reference']"),
])
def test_hyper_parameter_values_are_checked_with_their_names(method, values, message):
    """Types from the Hparams annotations, allowed values from `choice()`: one line, before any learner exists."""
    with pytest.raises(ClreproError) as err:
        registry.make_hparams(method, values)
    assert_one_line(err, message)


@pytest.mark.parametrize("method,n_tasks,hparams,message", [
    ("gem", 201, {}, "gem needs at least one memory slot per task, but memory 200 over 201 tasks gives 0; run it "
                     "with memory >= 201"),
    ("agem", 201, {}, "agem needs at least one memory slot per task"),
    ("taagem", 20, {"clusters_per_pool": 0}, "clustering memory needs num_pools, Q and P >= 1 (got 10, 0, 3)"),
])
def test_memory_too_small_for_the_method_fails_when_the_grid_is_resolved(method, n_tasks, hparams, message):
    """Memory 200 over 201 tasks: no slot per task; the job would fail, so the grid does, with one line."""
    changes = dict(methods=[method], memories=[200], datasets=["rotations"],
                   streams={"rotations": {"kind": "rotation", "n_tasks": n_tasks}})
    with pytest.raises(ClreproError) as err:
        resolve_run(cfg(**changes, hparams={method: hparams}), "rotations", method, 200, 0)
    assert_one_line(err, message)
    edge = min(n_tasks, 200)   # the edge passes: a slot per task (GEM/A-GEM), the default Q (TA-A-GEM)
    changes["streams"]["rotations"]["n_tasks"] = edge
    assert resolve_run(cfg(**changes), "rotations", method, 200, 0)["n_tasks"] == edge


def test_every_shipped_protocol_value_passes_the_check_and_lists_stay_equal():
    """What the parse-time check accepts is what the shipped grids use; the schema's method list is the registry."""
    for path in sorted((ROOT / "config").glob("*.yaml")):
        if path.name == "schema.yaml":
            continue
        config = load_config(path)
        assert all(resolve_run(config, **cell) for cell in grid(config)), path.name
    schema = yaml.safe_load((ROOT / "config/schema.yaml").read_text())
    assert schema["$defs"]["method"]["enum"] == list(registry.METHODS)


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
    assert spec["samples_per_task"] == 1000 and spec["test_examples_per_task"] == 2000
    assert spec["reduced"] == {"test_examples_per_task": 10000, "log_every": 100}
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


def test_workflow_config_loads_exactly_the_files_asked_for(tmp_path):
    """No --configfile: the default grid. With one: that file only (the default is not merged under it)."""
    from methods.config import workflow_config

    default = workflow_config([])
    assert default["overrides"] == BASE["overrides"]
    paper = workflow_config([ROOT / "config" / "paper.yaml"])
    assert "overrides" not in paper
    assert prepare(paper)["overrides"] == {}  # the schema default: full protocol sizes
    assert all(not resolve_run(paper, c["dataset"], c["method"], c["memory"], c["seed"])["reduced"]
               for c in grid(paper))
    # --config applies last, merging nested keys as Snakemake does
    cli = workflow_config([ROOT / "config" / "paper.yaml"], {"seeds": [7], "mnist": {"download": False}})
    assert cli["seeds"] == [7] and cli["mnist"] == {"source_dir": "../shared/data/mnist", "download": False}
    # ...and its nested values, which Snakemake hands over as strings, are typed as its top-level ones
    cli = workflow_config([], {"seeds": ["0", "1"], "memories": ["200"], "datasets": ["rotations"],
                               "overrides": {"log_every": "50", "test_subset": "spread"},
                               "mnist": {"download": "false"}, "hparams": {"online": {"lr": "0.03"}}})
    assert cli["seeds"] == [0, 1] and cli["memories"] == [200] and cli["datasets"] == ["rotations"]
    assert cli["overrides"]["log_every"] == 50 and cli["mnist"]["download"] is False
    assert cli["hparams"]["online"] == {"lr": 0.03}
    prepare(cli)


def test_base_layers_on_purpose_and_replaces_top_level_keys(tmp_path):
    from methods.config import load_layered

    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text("seeds: [0, 1]\noverrides: {log_every: 7}\nmnist: {download: false}\n")
    (tmp_path / "sub" / "child.yaml").write_text("base: ../base.yaml\noverrides: {}\nseeds: [3]\n")
    assert load_layered(tmp_path / "sub" / "child.yaml") == {"seeds": [3], "overrides": {},
                                                             "mnist": {"download": False}}
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ClreproError, match="loops back"):
        load_layered(tmp_path / "loop.yaml")
    (tmp_path / "gone.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ClreproError, match="nowhere.yaml not found"):
        load_layered(tmp_path / "gone.yaml")


def test_yaml_errors_name_file_and_line(tmp_path):
    from methods.config import load_yaml

    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [0, 1]\ndevice: cpu\nmethods: [online\n")
    with pytest.raises(ClreproError) as err:
        load_yaml(bad)
    assert_one_line(err, f"{bad}:4:", "invalid YAML", "fix the file")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ClreproError, match="must be a YAML mapping"):
        load_yaml(tmp_path / "list.yaml")


def test_configfiles_in_follows_snakemake_nargs():
    from methods.config import configfiles_in

    assert configfiles_in(["-n", "--configfile", "a.yaml", "b.yaml", "--cores", "2", "tables"]) == ["a.yaml", "b.yaml"]
    assert configfiles_in(["--configfiles=c.yaml", "tables"]) == ["c.yaml"]
    assert configfiles_in(["tables", "-n"]) == []


@pytest.mark.parametrize("request_,gpus,local,expected", [
    ("auto", 0, True, "cpu"), ("cpu", 0, True, "cpu"), ("auto", 2, True, "cuda"), ("cuda", 1, True, "cuda"),
    ("cpu", 2, True, "cpu"), ("auto", 0, False, "auto"), ("cuda", 0, False, "cuda"),
])
def test_device_is_resolved_before_anything_runs(request_, gpus, local, expected):
    from methods.config import resolve_device

    assert resolve_device({"device": request_}, local=local, gpus=gpus) == expected


def test_cuda_without_gpu_is_a_parse_time_error():
    from methods.config import resolve_device

    with pytest.raises(ClreproError) as err:
        resolve_device({"device": "cuda"}, local=True, gpus=0)
    assert_one_line(err, "no visible GPU", "set device: auto or device: cpu")


def test_spec_key_changes_with_what_determines_results_only():
    from methods.config import record_path, spec_key

    config = cfg(device="auto")
    config["_device"] = "cpu"
    spec = resolve_run(config, "rotations", "gem", 500, 0)
    assert spec["device"] == "cpu"
    config_cpu = cfg(device="cpu")
    config_cpu["_device"] = "cpu"
    assert spec_key(resolve_run(config_cpu, "rotations", "gem", 500, 0)) == spec_key(spec)  # auto == cpu here
    moved = cfg(mnist={"source_dir": "/elsewhere"})
    moved["_device"] = "cpu"
    assert spec_key(resolve_run(moved, "rotations", "gem", 500, 0)) == spec_key(spec)  # where MNIST is read from
    for change in ({"hparams": {"gem": {"lr": 0.5}}}, {"stream_seed": 1},
                   {"streams": {"rotations": {"kind": "rotation", "n_tasks": 20, "max_deg": 90},
                                "permutations": {"kind": "permutation", "n_tasks": 20},
                                "many_permutations": {"kind": "permutation", "n_tasks": 100}}}):
        other = cfg(**change)
        other["_device"] = "cpu"
        assert spec_key(resolve_run(other, "rotations", "gem", 500, 0)) != spec_key(spec), change
    path = record_path(spec)
    assert path == f"results/runs/mer2019/rotations/gem/mem500/seed0/{spec_key(spec)}.json"


def test_skip_tasks_override_selects_the_protocols_cross_validation_tasks():
    """agem2019 skips its 3 cross-validation tasks; `overrides: {skip_tasks: 0}` on a stream cut to 3 tasks
    trains exactly those (same permutations: a permutation stream's maps are a prefix of a longer one's), and
    the record says it differs from the protocol."""
    from data_prep.streams import StreamDef, build_maps

    config = load_config(ROOT / "config" / "agem2019.yaml")
    final = resolve_run(config, "permutations", "gem", 4250, 0)
    assert final["skip_tasks"] == 3 and final["n_tasks"] == 17 and final["reduced"] == {}
    config["streams"]["permutations"] = {"kind": "permutation", "n_tasks": 3}
    config["overrides"] = {"skip_tasks": 0}
    cv = resolve_run(config, "permutations", "gem", 4250, 0)
    assert cv["skip_tasks"] == 0 and cv["n_tasks"] == 3 and cv["reduced"] == {"skip_tasks": 3}
    cut, _ = build_maps("permutations", StreamDef("permutation", 3), 0)
    full, _ = build_maps("permutations", StreamDef("permutation", 20), 0)
    assert (cut == full[:3]).all()
    with pytest.raises(ClreproError) as err:
        cfg(overrides={"skip_tasks": -1})
    assert_one_line(err, "skip_tasks")
