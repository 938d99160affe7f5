# One training job per grid cell (dataset, method, memory, seed); memory-free methods run as mem0.
# Every job runs under tools/gpu_slot.py, which gives it its own GPU slot (CUDA_VISIBLE_DEVICES) or the CPU;
# `--resources gpu=N*K` (N GPUs, K = gpu.jobs_per_gpu) lets Snakemake start that many at once (docs/scale.md).
# A module-level string rather than a param: a different GPU count must not rerun finished jobs.
import shlex

GPU_SLOT = (
    f"{PY} -m tools.gpu_slot --gpus {config['gpu']['n_gpus']} --jobs-per-gpu {config['gpu']['jobs_per_gpu']} "
    f"--lock-dir {shlex.quote(config['gpu']['lock_dir'])} --"
)


rule train:
    input:
        stream="data/streams/{dataset}/manifest.json",
        mnist="data/mnist/manifest.json",
    output:
        RUN + ".json",
    params:
        spec=run_spec,
    log:
        "logs/" + RUN + ".log",
    benchmark:
        "benchmarks/" + RUN + ".tsv"
    threads: 1
    resources:
        gpu=1,
    conda:
        "../environment.yml"
    shell:
        "{GPU_SLOT} {PY} -m methods.train --spec {params.spec:q} --stream data/streams/{wildcards.dataset} "
        "--mnist data/mnist --threads {threads} --out {output} > {log} 2>&1"


rule runs:
    input:
        run_records(),
