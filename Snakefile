"""Merge OLMo-3 RL-Zero experts with every method and evaluate them: Table 1 from one command.

snakemake --cores all                                   # the offline demo (config/demo.yaml)
snakemake --cores all --configfile config/table1.yaml   # the paper's run (GPU)
"""

from snakemake.utils import min_version

min_version("9.0")


if not config:  # no --configfile: the offline demo
    from mergeeval.yamlio import load_yaml

    config.update(load_yaml("config/demo.yaml", "run config"))


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/stats.smk"
include: "workflow/rules/merge.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/sweep.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/errors.smk"


rule all:
    default_target: True
    input:
        multiext(PLAN.report_prefix(), ".md", ".csv", ".json", ".png"),
