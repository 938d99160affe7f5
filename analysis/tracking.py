"""`python -m analysis.tracking [--store URI] [--artifacts DIR] [--out SUMMARY] RECORD...`: run records -> MLflow.

MLflow is a *view* of the run records: the JSON records stay the source of truth and everything logged here is
read from them (metrics recomputed from R and b by analysis.records.tidy, never taken from the file). One MLflow
run per record, in an experiment named after the record's protocol:

- params: the resolved spec, flattened with dots (`hparams.lr`, `model.n_hiddens`, `reduced.samples_per_task`);
  strings as they are, everything else as JSON (`0.001`, `false`, `null`);
- tags: `clrepro.record_path`, `clrepro.record_sha256` (the record file's content hash), the stream checksums
  (`clrepro.stream.sha256.<file>`, `clrepro.stream.mnist_manifest_sha256`), git commit (`clrepro.git.commit`
  and MLflow's own `mlflow.source.git.commit`), device, host and package versions;
- metrics over the stream, one point per evaluation of the eval_log with the examples seen as the step:
  `acc/task_<j>` (test accuracy on task j), `acc/mean` (mean over all T tasks; ACC at the last evaluation) and
  `acc/mean_seen` (mean over the tasks trained so far);
- final metrics, logged once at the last step: `ACC`, `LA` (no convention), `BWT.paper`, `BWT.code`,
  `FWT.*`, `FGT.*` (both denominators, see analysis/metrics.py), `LCA<beta>` where the log has first batches,
  and the timing `examples_per_s`, `train_s`;
- artifact: the record JSON itself.

Idempotent: a record whose path and content hash already have a complete run is skipped; a record whose
content changed (same path, new hash) replaces its run (the old run is deleted). The content-hash tag is written
last, so a run left half-written by a killed import is never taken for a complete one: it is replaced.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from data_prep.atomic import sha256_file, write_json
from data_prep.errors import ClreproError, one_line_errors

from .records import NO_CONVENTION, load, reduced_label, stored_mismatches, tidy

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STORE = "sqlite:///results/mlflow/mlflow.db"
DEFAULT_SUMMARY = "results/mlflow/imported.json"

PATH_TAG = "clrepro.record_path"
SHA_TAG = "clrepro.record_sha256"  # written last: its presence marks a complete run

# MLflow's per-call limits for log_batch (mlflow.utils.validation)
MAX_METRICS = 1000
MAX_PARAMS_TAGS = 100


# ---------------------------------------------------------------------------------------------------------
# What a record becomes (pure functions of the record, testable without a store)


def as_text(value) -> str:
    """An MLflow param/tag value: strings as they are, everything else as JSON (round-trips with json.loads)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def flat_spec(spec: dict, prefix: str = "") -> dict[str, str]:
    """The resolved spec as MLflow params: nested keys joined with dots, e.g. {'hparams.lr': '0.001'}."""
    out: dict[str, str] = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_spec(value, name + "."))
        else:
            out[name] = as_text(value)
    return out


def record_id(path: str | Path) -> str:
    """The record's path as its tag: relative to the project when inside it (the workflow's own paths)."""
    path = Path(path).resolve()
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def run_name(spec: dict) -> str:
    return f"{spec['dataset']}/{spec['method']}/mem{spec['memory']}/seed{spec['seed']}"


def record_tags(rec: dict, path: str | Path, sha256: str) -> dict[str, str]:
    """Provenance: where the record is, its content hash, the stream's checksums, git commit, device, versions."""
    env, stream = rec.get("env", {}), rec.get("stream", {})
    git = env.get("git") or {}
    tags = {
        PATH_TAG: record_id(path),
        "clrepro.record_key": Path(path).stem,
        "clrepro.schema_version": as_text(rec.get("schema_version")),
        "clrepro.reduced": reduced_label(rec["spec"]),
        "clrepro.stream.mnist_manifest_sha256": as_text(stream.get("mnist_manifest_sha256")),
        "clrepro.git.commit": as_text(git.get("commit")),
        "clrepro.git.dirty": as_text(git.get("dirty")),
        "clrepro.device": as_text(env.get("device")),
        "clrepro.host": as_text(env.get("host")),
    }
    for name, digest in sorted((stream.get("sha256") or {}).items()):
        tags[f"clrepro.stream.sha256.{name}"] = as_text(digest)
    for key in ("gpu_name", "cuda", "python", "torch", "numpy", "quadprog", "snakemake"):
        if env.get(key) is not None:
            tags[f"clrepro.env.{key}"] = as_text(env[key])
    if git.get("commit"):
        tags["mlflow.source.git.commit"] = git["commit"]
    tags[SHA_TAG] = sha256  # last (see module docstring)
    return tags


def final_metrics(rec: dict) -> dict[str, float]:
    """ACC, LA, BWT/FWT/FGT under both conventions (+ LCA, timing), recomputed from R and b by records.tidy."""
    table = tidy([rec])
    return {(m if conv == NO_CONVENTION else f"{m}.{conv}"): float(v)
            for m, conv, v in zip(table["metric"], table["convention"], table["value"])}


def eval_metrics(rec: dict) -> list[tuple[str, float, int, int]]:
    """(key, value, step, evaluation index) for every evaluation of the eval_log; step = examples seen."""
    log = rec["eval_log"]
    acc = np.asarray(log["acc"], dtype=float)
    seen = [int(s) for s in log["examples_seen"]]
    current = [int(t) for t in log["task"]]
    n_tasks = acc.shape[1]
    names = [f"acc/task_{j:0{len(str(n_tasks - 1))}d}" for j in range(n_tasks)]
    out = []
    for i, row in enumerate(acc):
        out += [(name, float(v), seen[i], i) for name, v in zip(names, row)]
        out.append(("acc/mean", float(row.mean()), seen[i], i))
        out.append(("acc/mean_seen", float(row[: min(current[i], n_tasks - 1) + 1].mean()), seen[i], i))
    return out


# ---------------------------------------------------------------------------------------------------------
# The store


def _client(store: str):
    from mlflow import MlflowClient

    if store.startswith("sqlite:///"):
        Path(store.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=store)


def default_artifacts(store: str) -> Path | None:
    """Beside a SQLite store: `<its folder>/artifacts`; otherwise MLflow's default."""
    if store.startswith("sqlite:///"):
        return Path(store.removeprefix("sqlite:///")).parent / "artifacts"
    return None


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Importer:
    def __init__(self, store: str, artifacts: str | Path | None = None):
        self.store = store
        self.client = _client(store)
        self.artifacts = Path(artifacts) if artifacts else default_artifacts(store)
        self._experiments: dict[str, str] = {}
        self._existing: dict[str, dict[str, list]] = {}

    def experiment(self, protocol: str) -> str:
        """The id of the experiment named after the protocol (created, or restored if it was deleted)."""
        if protocol not in self._experiments:
            exp = self.client.get_experiment_by_name(protocol)
            if exp is None:
                location = (self.artifacts / protocol).resolve().as_uri() if self.artifacts else None
                exp_id = self.client.create_experiment(protocol, artifact_location=location)
            else:
                exp_id = exp.experiment_id
                if exp.lifecycle_stage == "deleted":
                    self.client.restore_experiment(exp_id)
            self._experiments[protocol] = exp_id
        return self._experiments[protocol]

    def existing(self, exp_id: str) -> dict[str, list]:
        """record path -> the active runs that carry it (one search per experiment, paged)."""
        if exp_id not in self._existing:
            by_path: dict[str, list] = {}
            token = None
            while True:
                page = self.client.search_runs([exp_id], max_results=1000, page_token=token)
                for run in page:
                    if PATH_TAG in run.data.tags:
                        by_path.setdefault(run.data.tags[PATH_TAG], []).append(run)
                token = page.token
                if not token:
                    break
            self._existing[exp_id] = by_path
        return self._existing[exp_id]

    def import_record(self, path: str | Path, rec: dict) -> tuple[str, str]:
        """('new' | 'replaced' | 'unchanged', run id) for one (already checked) record."""
        sha = sha256_file(path)
        exp_id = self.experiment(rec["spec"]["protocol"])
        rid = record_id(path)
        runs = self.existing(exp_id).get(rid, [])
        keep = next((r for r in runs if r.data.tags.get(SHA_TAG) == sha), None)
        for run in runs:  # older content, duplicates, half-written imports
            if run is not keep:
                self.client.delete_run(run.info.run_id)
        if keep is not None:
            self.existing(exp_id)[rid] = [keep]
            return "unchanged", keep.info.run_id
        run_id = self._log(exp_id, path, rec, sha)
        self.existing(exp_id)[rid] = [self.client.get_run(run_id)]
        return ("replaced" if runs else "new"), run_id

    def _log(self, exp_id: str, path: str | Path, rec: dict, sha: str) -> str:
        from mlflow.entities import Metric, Param, RunTag

        tags = record_tags(rec, path, sha)
        run = self.client.create_run(exp_id, run_name=run_name(rec["spec"]), tags={PATH_TAG: tags[PATH_TAG]})
        run_id = run.info.run_id
        t0 = run.info.start_time or int(time.time() * 1000)
        params = [Param(k, v) for k, v in sorted(flat_spec(rec["spec"]).items())]
        for chunk in _chunks(params, MAX_PARAMS_TAGS):
            self.client.log_batch(run_id, params=chunk, synchronous=True)
        # one timestamp per evaluation (its index in ms after the run's start): no two points of a key collide
        evals = eval_metrics(rec)
        n_evals = len(rec["eval_log"]["examples_seen"])
        last_step = int(rec["eval_log"]["examples_seen"][-1])
        metrics = [Metric(key, value, t0 + i, step) for key, value, step, i in evals]
        metrics += [Metric(key, value, t0 + n_evals, last_step) for key, value in final_metrics(rec).items()]
        for chunk in _chunks(metrics, MAX_METRICS):
            self.client.log_batch(run_id, metrics=chunk, synchronous=True)
        self.client.log_artifact(run_id, str(path))
        rest = [RunTag(k, v) for k, v in tags.items() if k not in (PATH_TAG, SHA_TAG)]
        for chunk in _chunks(rest, MAX_PARAMS_TAGS):
            self.client.log_batch(run_id, tags=chunk, synchronous=True)
        self.client.set_tag(run_id, SHA_TAG, sha)  # complete from here on
        self.client.set_terminated(run_id, "FINISHED")
        return run_id


def import_records(paths: list[str], store: str = DEFAULT_STORE, artifacts: str | Path | None = None,
                   records: list[dict] | None = None) -> dict:
    """Import run records into the MLflow store; returns the summary the CLI writes with --out.

    `records` are the loaded records of `paths` if the caller has them; otherwise they are loaded (and
    checked, analysis.records.load) here, all of them before the store is touched.
    """
    from mlflow.exceptions import MlflowException

    start = time.perf_counter()
    paths = [str(path) for path in paths]
    records = records if records is not None else [load(path) for path in paths]
    counts = {"new": 0, "replaced": 0, "unchanged": 0}
    runs = {}
    try:
        importer = Importer(store, artifacts)
        for path, rec in zip(paths, records):
            outcome, run_id = importer.import_record(path, rec)
            counts[outcome] += 1
            runs[record_id(path)] = run_id
    except MlflowException as err:
        first = (str(err.message).strip().splitlines() or [type(err).__name__])[0]
        raise ClreproError(f"MLflow store {store}: {first}") from None
    return {"store": store, "records": len(paths), **counts, "runs": runs,
            "seconds": round(time.perf_counter() - start, 3)}


@one_line_errors
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.tracking",
                                description="Import run records into a local MLflow store (a view of them).")
    p.add_argument("--store", default=DEFAULT_STORE, help=f"MLflow tracking URI (default {DEFAULT_STORE})")
    p.add_argument("--artifacts", help="artifact folder for new experiments (default: beside a SQLite store)")
    p.add_argument("--out", help="write a JSON summary here (record path -> run id, counts)")
    p.add_argument("records", nargs="+")
    args = p.parse_args(argv)
    records = [load(path) for path in args.records]
    for line in stored_mismatches(records):
        print(f"[tracking] warning: {line}", file=sys.stderr)
    summary = import_records(args.records, args.store, args.artifacts, records)
    if args.out:
        write_json(args.out, summary)
    print(f"[tracking] {summary['records']} run records -> {args.store}: {summary['new']} new, "
          f"{summary['replaced']} replaced, {summary['unchanged']} unchanged ({summary['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
