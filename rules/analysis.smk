# Aggregation, tables, plots: computed from the run records only (see docs/analysis.md).
# `snakemake --cores 1 tables` regenerates every table and plot; when the run records exist and are up to
# date nothing trains. Each rule lists the analysis code it runs as input, so editing it reruns only the
# (cheap) analysis jobs, never training. Rules call `python`: the environment is first on PATH (./clrepro).

CONVENTIONS = ["paper", "code"]
TABLE_FORMATS = ["md", "tex", "csv"]
PLOT_FORMATS = ["png", "pdf"]
# The analysis sources each rule runs (inputs, so that editing them reruns exactly the affected jobs).
CODE = {m: f"analysis/{m}.py" for m in ("check", "aggregate", "records", "metrics", "tables", "published", "plots")}

ANALYSIS_TARGETS = (
    expand("results/plots/summary.{ext}", ext=PLOT_FORMATS)
    + expand("results/tables/main_{convention}.{ext}", convention=CONVENTIONS, ext=TABLE_FORMATS)
    + expand("results/tables/paper_{protocol}.{ext}", protocol=config["_protocol"]["name"], ext=TABLE_FORMATS)
    + expand("results/plots/acc_matrix_{dataset}.{ext}", dataset=config["datasets"], ext=PLOT_FORMATS)
    + expand("results/plots/curves_{dataset}.{ext}", dataset=config["datasets"], ext=PLOT_FORMATS)
    + expand("results/plots/acc_vs_memory.{ext}", ext=PLOT_FORMATS)
)


# Analysis steps either complete or change nothing: every record is checked by its own job first, whose only
# output is an internal manifest, so a malformed record stops the analysis before any table is touched.
rule check_records:
    input:
        records=run_records(),
        code=[CODE["check"], CODE["records"], CODE["metrics"]],
    output:
        "results/checked/records.json",
    params:
        records=sorted(RECORDS),  # another set of records (another config): the analysis is redone
    log:
        "logs/analysis/check_records.log",
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.check --out {output} {input.records} > {log} 2>&1"


rule aggregate:
    input:
        checked="results/checked/records.json",
        records=run_records(),
        code=[CODE["aggregate"], CODE["records"], CODE["metrics"]],
    output:
        runs=report("results/tables/runs_long.csv", caption="../report/runs_long.rst", category="Data"),
        matrix="results/tables/matrix_long.csv",
        evals="results/tables/eval_long.csv",
    log:
        "logs/analysis/aggregate.log",
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.aggregate --out {output.runs} --matrix {output.matrix} --evals {output.evals} "
        "{input.records} > {log} 2>&1"


rule summary:
    input:
        runs="results/tables/runs_long.csv",
        code=[CODE["tables"], CODE["records"], CODE["metrics"]],
    output:
        report("results/tables/summary.csv", caption="../report/summary.rst", category="Data"),
    log:
        "logs/analysis/summary.log",
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.tables summary --runs {input.runs} --out {output} > {log} 2>&1"


rule main_table:
    input:
        summary="results/tables/summary.csv",
        code=[CODE["tables"], CODE["records"], CODE["metrics"]],
    output:
        md=report("results/tables/main_{convention}.md", caption="../report/main_table.rst",
                  category="Tables", subcategory="{convention} convention", labels={"table": "main",
                  "convention": "{convention}", "format": "Markdown"}),
        tex=report("results/tables/main_{convention}.tex", caption="../report/main_table.rst",
                   category="Tables", subcategory="{convention} convention", labels={"table": "main",
                   "convention": "{convention}", "format": "LaTeX"}),
        csv=report("results/tables/main_{convention}.csv", caption="../report/main_table.rst",
                   category="Tables", subcategory="{convention} convention", labels={"table": "main",
                   "convention": "{convention}", "format": "CSV"}),
    wildcard_constraints:
        convention="|".join(CONVENTIONS),
    log:
        "logs/analysis/main_{convention}.log",
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.tables main --summary {input.summary} --convention {wildcards.convention} "
        "--md {output.md} --tex {output.tex} --csv {output.csv} > {log} 2>&1"


# The paper's own table for the config's protocol (GEM, A-GEM, MER layouts), every cell beside its published
# value; only runs of that protocol are compared with a published number (docs/analysis.md).
rule paper_table:
    input:
        summary="results/tables/summary.csv",
        published="analysis/published.csv",
        code=[CODE["published"], CODE["tables"], CODE["records"], CODE["metrics"]],
    output:
        md=report("results/tables/paper_{protocol}.md", caption="../report/published.rst",
                  category="Tables", subcategory="paper {protocol}", labels={"table": "paper {protocol}",
                  "format": "Markdown"}),
        tex=report("results/tables/paper_{protocol}.tex", caption="../report/published.rst",
                   category="Tables", subcategory="paper {protocol}", labels={"table": "paper {protocol}",
                   "format": "LaTeX"}),
        csv=report("results/tables/paper_{protocol}.csv", caption="../report/published.rst",
                   category="Tables", subcategory="paper {protocol}", labels={"table": "paper {protocol}",
                   "format": "CSV"}),
    log:
        "logs/analysis/paper_{protocol}.log",
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.published --summary {input.summary} --published {input.published} "
        "--protocol {wildcards.protocol} --md {output.md} --tex {output.tex} --csv {output.csv} > {log} 2>&1"


rule heatmap:
    input:
        matrix="results/tables/matrix_long.csv",
        code=[CODE["plots"], CODE["records"], CODE["metrics"]],
    output:
        png=report("results/plots/acc_matrix_{dataset}.png", caption="../report/heatmap.rst",
                   category="Forgetting plots", subcategory="{dataset}",
                   labels={"plot": "accuracy matrix", "dataset": "{dataset}"}),
        pdf="results/plots/acc_matrix_{dataset}.pdf",
    log:
        "logs/analysis/acc_matrix_{dataset}.log",
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.plots heatmap --matrix {input.matrix} --dataset {wildcards.dataset} "
        "--png {output.png} --pdf {output.pdf} > {log} 2>&1"


rule curves:
    input:
        evals="results/tables/eval_long.csv",
        code=[CODE["plots"], CODE["records"], CODE["metrics"]],
    output:
        png=report("results/plots/curves_{dataset}.png", caption="../report/curves.rst",
                   category="Forgetting plots", subcategory="{dataset}",
                   labels={"plot": "accuracy over the stream", "dataset": "{dataset}"}),
        pdf="results/plots/curves_{dataset}.pdf",
    log:
        "logs/analysis/curves_{dataset}.log",
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.plots curves --evals {input.evals} --dataset {wildcards.dataset} "
        "--png {output.png} --pdf {output.pdf} > {log} 2>&1"


rule overview:
    input:
        runs="results/tables/runs_long.csv",
        code=[CODE["plots"], CODE["records"], CODE["metrics"]],
    output:
        png=report("results/plots/summary.png", caption="../report/overview.rst", category="1. Summary",
                   labels={"plot": "ACC and BWT per method", "dataset": "all"}),
        pdf="results/plots/summary.pdf",
    log:
        "logs/analysis/summary_plot.log",
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.plots overview --runs {input.runs} --png {output.png} --pdf {output.pdf} > {log} 2>&1"


rule acc_vs_memory:
    input:
        summary="results/tables/summary.csv",
        code=[CODE["plots"], CODE["records"], CODE["metrics"]],
    output:
        png=report("results/plots/acc_vs_memory.png", caption="../report/acc_vs_memory.rst",
                   category="Forgetting plots", subcategory="all datasets",
                   labels={"plot": "ACC vs memory", "dataset": "all"}),
        pdf="results/plots/acc_vs_memory.pdf",
    log:
        "logs/analysis/acc_vs_memory.log",
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.plots memory --summary {input.summary} --png {output.png} --pdf {output.pdf} > {log} 2>&1"


rule tables:
    input:
        ANALYSIS_TARGETS,
