"""RegMean input Grams: each expert over its own task's calibration prompts."""


rule collect_stats:
    input:
        model=lambda w: model_dir(w.expert),
        prompts=lambda w: prompts_file(w.expert),
    output:
        directory(f"results/{RUN}/stats/{{expert}}"),
    log:
        f"logs/{RUN}/collect_stats/{{expert}}.log",
    conda:
        "../envs/mergeeval.yaml"
    resources:
        gpu=config["stats"]["gpus"],
        mem_mb=config["stats"]["mem_mb"],
        runtime=config["stats"]["runtime"],
    params:
        max_tokens=config["stats"]["max_tokens"],
        batch_size=config["stats"]["batch_size"],
        device=config["stats"]["device"],
    shell:
        "python -m merges stats --model {input.model} --prompts {input.prompts} --output {output} "
        "--max-tokens {params.max_tokens} --batch-size {params.batch_size} --device {params.device} --force > {log} 2>&1"
