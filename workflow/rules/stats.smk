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
        "python -m merges stats --model {input.model:q} --prompts {input.prompts:q} --output {output:q} "
        "--max-tokens {params.max_tokens:q} --batch-size {params.batch_size:q} --device {params.device:q} --force > {log:q} 2>&1"
