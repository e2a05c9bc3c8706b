"""RegMean input Grams, one folder per (statistics recipe, expert): the recipe's model (the expert,
or the base) over the expert's calibration prompts (pipeline.plan.STATS_RECIPES)."""


rule collect_stats:
    input:
        model=lambda w: PLAN.stats_model(w.recipe, w.expert),
        template=lambda w: PLAN.stats_template(w.recipe, w.expert),
        prompts=lambda w: PLAN.prompts_file(w.expert, w.recipe),
    output:
        directory(f"results/{RUN}/stats/{{recipe}}/{{expert}}"),
    log:
        f"logs/{RUN}/collect_stats/{{recipe}}/{{expert}}.log",
    benchmark:
        f"benchmarks/{RUN}/collect_stats/{{recipe}}/{{expert}}.tsv"
    conda:
        "../envs/mergeeval.yaml"
    resources:
        **PLAN.resources("stats"),
    params:
        options=lambda w: PLAN.stats_args(w.recipe, w.expert),
    shell:
        "python -m merges stats --model {input.model:q} --chat-template-from {input.template:q} "
        "--prompts {input.prompts:q} --output {output:q} {params.options} --force > {log:q} 2>&1"
