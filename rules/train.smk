# One training job per grid cell (dataset, method, memory, seed); memory-free methods run as mem0.
# A record's path ends in its spec key (methods.config.spec_key): a changed spec writes a new record beside
# the old one, going back reuses the old one, and nothing finished is ever deleted by a config change.
# A finished record has no data inputs at all (unless its training is forced), so rebuilding the data never
# retrains it: Snakemake would otherwise retrain every finished run whose data is missing or rebuilt ("input
# updated by another job"), say records copied into a fresh clone. That changes a job's input set, so the
# profile leaves `input` out of the rerun triggers. A record still to be trained has plain data inputs, never
# ancient(): Snakemake 9 drops the training jobs that need an ancient() input whose own job must run, so a new
# stream_seed rebuilt the stream and then trained nothing (tests/test_workflow_trust.py).
# Every job runs under tools/gpu_slot.py, which gives it its own GPU slot (CUDA_VISIBLE_DEVICES) or the CPU;
# `--resources gpu=N*K` (N GPUs, K = gpu.jobs_per_gpu) lets Snakemake start that many at once (docs/scale.md).
# The slot settings are resources, not params: a different GPU count must not rerun finished jobs.
# Longest jobs first: `priority` is train_priority (rules/common.smk).


rule train:
    input:
        unpack(train_data),
    output:
        f"results/runs/{RUN}.json",
    params:
        spec=run_spec,
    log:
        f"logs/train/{RUN}.log",
    benchmark:
        f"benchmarks/train/{RUN}.tsv"
    threads: 1
    priority: train_priority
    resources:
        gpu=1,
        n_gpus=config["gpu"]["n_gpus"],
        jobs_per_gpu=config["gpu"]["jobs_per_gpu"],
        gpu_lock_dir=config["gpu"]["lock_dir"],
    conda:
        "../environment.yml"
    shell:
        "python -m tools.gpu_slot --gpus {resources.n_gpus} --jobs-per-gpu {resources.jobs_per_gpu} "
        "--lock-dir {resources.gpu_lock_dir:q} -- "
        "python -m methods.train --spec {params.spec:q} --stream data/streams/{wildcards.dataset} "
        "--mnist data/mnist --threads {threads} --out {output} > {log} 2>&1"


rule runs:
    input:
        run_records(),
