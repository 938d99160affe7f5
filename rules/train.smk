# One training job per grid cell (dataset, method, memory, seed); memory-free methods run as mem0.


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
        "{PY} -m methods.train --spec {params.spec:q} --stream data/streams/{wildcards.dataset} "
        "--mnist data/mnist --threads {threads} --out {output} > {log} 2>&1"


rule runs:
    input:
        run_records(),
