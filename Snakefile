# clrepro: reproduce GEM / A-GEM / MER / DGR / TA-A-GEM on the MNIST task streams.
#   snakemake --cores all                     full pipeline for config/config.yaml (tables, plots)
#   snakemake --cores all streams             only MNIST + the task streams
#   snakemake --cores all runs                only the training grid
#   snakemake --cores 1 tables                tables and plots from existing run records (no training)
#   snakemake --configfile config/paper.yaml  the full paper grid, exactly as that file says
# There is no `configfile:` directive on purpose: Snakemake would merge --configfile files ONTO it, so every
# grid would inherit the default grid's reduced sizes. rules/common.smk loads exactly the files asked for
# (config/config.yaml when none is), see methods.config.workflow_config.
from snakemake.utils import min_version

min_version("9.0")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/analysis.smk"
include: "rules/tracking.smk"


rule all:
    default_target: True
    input:
        # the records themselves, not only the tables made from them: a deleted record is retrained
        run_records(),
        # the data, so that `--forcerun mnist` or `stream` rebuilds it even when every run is finished
        # (a finished record does not need it: rules/train.smk)
        rules.streams.input,
        ANALYSIS_TARGETS,


onstart:
    onstart_note()


onsuccess:
    onsuccess_note()


onerror:
    onerror_summary()
