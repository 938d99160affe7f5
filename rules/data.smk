# MNIST acquisition and the task streams (pixel maps + sha256 manifests).


rule mnist:
    output:
        manifest="data/mnist/manifest.json",
    params:
        source=mnist_source_arg(),
    log:
        "logs/data/mnist.log",
    conda:
        "../environment.yml"
    shell:
        "python -m data_prep mnist {params.source} --cache data/download --out data/mnist > {log} 2>&1"


rule stream:
    input:
        mnist="data/mnist/manifest.json",
    output:
        manifest="data/streams/{dataset}/manifest.json",
        maps="data/streams/{dataset}/maps.npy",
    params:
        definition=stream_args,
        seed=config["stream_seed"],
    log:
        "logs/data/stream_{dataset}.log",
    conda:
        "../environment.yml"
    shell:
        "python -m data_prep stream --dataset {wildcards.dataset} {params.definition} "
        "--stream-seed {params.seed} --mnist data/mnist --out data/streams/{wildcards.dataset} > {log} 2>&1"


rule streams:
    input:
        expand("data/streams/{dataset}/manifest.json", dataset=config["datasets"]),


rule export_reference:
    """The GEM/MER torch.save format (large: 4.4 GB for 20 tasks), for running the reference scripts."""
    input:
        stream="data/streams/{dataset}/manifest.json",
    output:
        "data/reference_format/mnist_{dataset}.pt",
    log:
        "logs/data/export_{dataset}.log",
    conda:
        "../environment.yml"
    shell:
        "python -m data_prep export-reference --stream data/streams/{wildcards.dataset} --mnist data/mnist "
        "--out {output} > {log} 2>&1"
