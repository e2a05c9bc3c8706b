"""The Table 1 report next to the paper's numbers (and a baseline table, in regression mode)."""


localrules:
    collect_fingerprints,


rule collect_fingerprints:
    input:
        [PLAN.fingerprint_file(m) for m in [*PLAN.merges, *PLAN.point_ids]],
    output:
        PLAN.fingerprints_file(),
    log:
        f"logs/{RUN}/collect_fingerprints.log",
    conda:
        "../envs/mergeeval.yaml"
    shell:
        "python -m merges.fingerprint_check collect {input:q} -o {output:q} > {log:q} 2>&1"


rule report_table:
    input:
        [PLAN.batch_manifest("score", b) for b in PLAN.batches],
        [PLAN.fingerprints_file()] if PLAN.merges else [],
        [PLAN.selection_file(m) for m in PLAN.points],
    output:
        multiext(PLAN.report_prefix(), ".md", ".csv", ".json", ".png"),
        [PLAN.sweep_plot(m) for m in PLAN.points],
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
