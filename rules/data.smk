# MNIST acquisition and the task streams (pixel maps + sha256 manifests).


# Data outputs are update(): the commands replace them atomically, Snakemake does not delete them before a
# job, and it restores the previous version when the job fails. So a failed data step (say, a corrupt MNIST
# copy) leaves the verified data, and every run trained on it, in place.
# Where MNIST is read from is not a param: every copy is verified against the canonical MD5s, so pointing
# mnist.source_dir at another (identical) copy must not rebuild anything. It reaches the command as a
# resource, which Snakemake does not treat as a rerun trigger.
rule mnist:
    output:
        manifest=update("data/mnist/manifest.json"),
    log:
        "logs/data/mnist.log",
    resources:
        mnist_source=mnist_source_arg(),
    conda:
        "../environment.yml"
    shell:
        "python -m data_prep mnist {resources.mnist_source} --out data/mnist > {log} 2>&1"


rule stream:
    input:
        mnist="data/mnist/manifest.json",
    output:
        manifest=update("data/streams/{dataset}/manifest.json"),
        maps=update("data/streams/{dataset}/maps.npy"),
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
