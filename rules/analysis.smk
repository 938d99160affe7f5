# Aggregation, tables, plots (from run records only: never triggers training by itself).

ANALYSIS_TARGETS = ["results/tables/runs_long.csv"]


rule aggregate:
    input:
        run_records(),
    output:
        "results/tables/runs_long.csv",
    log:
        "logs/analysis/aggregate.log",
    conda:
        "../environment.yml"
    shell:
        "{PY} -m analysis.aggregate --out {output} {input} > {log} 2>&1"


rule tables:
    input:
        ANALYSIS_TARGETS,
