"""Samples: one vLLM engine per model for all of that model's benchmarks. The manifest
generation.json is the job's output; the samples beside it are kept by an interrupted job and
reused by the next one when their request key matches."""


rule generate_samples:
    input:
        model=lambda w: PLAN.eval_model_dir(w.model),
        templates=[PLAN.model_dir(e) for e in EXPERTS],
    output:
        f"results/{RUN}/samples/{{model}}/generation.json",
    log:
        f"logs/{RUN}/generate_samples/{{model}}.log",
    conda:
        "../envs/mergeeval.yaml"
    threads: PLAN.eval["threads"]
    resources:
        **PLAN.resources("generate"),
    params:
        options=lambda w: PLAN.generate_args(w.model),
        env=PLAN.env_prefix(),
        outdir=lambda w: PLAN.samples_dir(w.model),
    shell:
        "env {params.env} python -m evals generate --model {input.model:q} --output {params.outdir:q} "
        "{params.options} > {log:q} 2>&1"
