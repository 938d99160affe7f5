# clrepro: reproduce GEM / A-GEM / MER / DGR / TA-A-GEM on the MNIST task streams.
#   snakemake --cores all                     full pipeline for config/config.yaml (tables, plots)
#   snakemake --cores all streams             only MNIST + the task streams
#   snakemake --cores all runs                only the training grid
#   snakemake --cores 1 tables                tables and plots from existing run records (no training)
#   snakemake --configfile config/paper.yaml  the full paper grid
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"
report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/analysis.smk"


rule all:
    default_target: True
    input:
        ANALYSIS_TARGETS,
