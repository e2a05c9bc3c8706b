"""The Table 1 report next to the paper's numbers (and a baseline table, in regression mode)."""


rule report_table:
    input:
        [score_file(model, b) for _, b, model in report_cells()],
    output:
        report_outputs(),
    log:
        f"logs/{RUN}/report_table.log",
    conda:
        "../envs/mergeeval.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cells=flags(
            *[
                ("--cell", f"{row},{b},{score_file(model, b)}")
                for row, b, model in report_cells()
            ]
        ),
        baseline=(
            flags(("--baseline", config["report"]["baseline"]))
            if config["report"]["baseline"]
            else ""
        ),
        band=config["report"]["noise_band"],
        prefix=lambda w, output: output[0].removesuffix(".md"),
        suite=SUITE.name,
        template=EVAL["template"],
    shell:
        "python -m evals report {params.cells} --output {params.prefix:q} --suite {params.suite:q} "
        "--template {params.template:q} {params.baseline} --noise-band {params.band:q} > {log:q} 2>&1"
