"""The Table 1 report next to the paper's numbers (and a baseline table, in regression mode)."""


rule report_table:
    input:
        [PLAN.batch_manifest("score", b) for b in PLAN.batches],
    output:
        multiext(PLAN.report_prefix(), ".md", ".csv", ".json", ".png"),
    log:
        f"logs/{RUN}/report_table.log",
    benchmark:
        f"benchmarks/{RUN}/report_table.tsv"
    conda:
        "../envs/mergeeval.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        options=PLAN.report_args(),
        prefix=lambda w, output: output[0].removesuffix(".md"),
    shell:
        "python -m evals report --output {params.prefix:q} {params.options} > {log:q} 2>&1"
