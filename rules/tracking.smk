# Experiment tracking: the current config's run records imported into a local MLflow store (docs/tracking.md).
# MLflow is a view of the records, which stay the source of truth; the import is idempotent (a record already
# imported with the same content is skipped, a changed one replaces its run), so rerunning this rule after new
# or retrained runs only adds those. Not part of the default target: `./clrepro reproduce mlflow`.
# The store itself is not an output (Snakemake would delete it before each import); the summary is.

MLFLOW_STORE = "sqlite:///results/mlflow/mlflow.db"


rule mlflow:
    input:
        records=run_records(),
        code=["analysis/tracking.py", "analysis/records.py", "analysis/metrics.py"],
    output:
        "results/mlflow/imported.json",
    log:
        "logs/analysis/mlflow.log",
    params:
        store=MLFLOW_STORE,
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.tracking --store {params.store} --out {output} {input.records} > {log} 2>&1"
