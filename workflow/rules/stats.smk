"""RegMean input Grams: each expert over its own task's calibration prompts."""


rule collect_stats:
    input:
        model=lambda w: PLAN.model_dir(w.expert),
        prompts=lambda w: PLAN.prompts_file(w.expert),
    output:
        directory(f"results/{RUN}/stats/{{expert}}"),
    log:
        f"logs/{RUN}/collect_stats/{{expert}}.log",
    conda:
        "../envs/mergeeval.yaml"
    resources:
        **PLAN.resources("stats"),
    params:
        options=PLAN.stats_args(),
    shell:
        "python -m merges stats --model {input.model:q} --prompts {input.prompts:q} --output {output:q} "
        "{params.options} --force > {log:q} 2>&1"
