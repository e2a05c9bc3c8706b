"""Samples: one vLLM engine per model for all of that model's benchmarks. The manifest
generation.json is the job's output; the samples beside it are kept by an interrupted job and
reused by the next one when their request key matches."""


rule generate_samples:
    input:
        model=lambda w: eval_model_dir(w.model),
        templates=lambda w: [model_dir(e) for e in EXPERTS],
    output:
        f"results/{RUN}/samples/{{model}}/generation.json",
    log:
        f"logs/{RUN}/generate_samples/{{model}}.log",
    conda:
        "../envs/mergeeval.yaml"
    threads: EVAL["threads"]
    resources:
        gpu=EVAL["gpus"],
        mem_mb=EVAL["mem_mb"],
        runtime=EVAL["runtime"],
    params:
        benchmarks=lambda w: flags(
            *[("--benchmark", b) for b in row_benchmarks(w.model)]
        ),
        templates=template_options,
        engine=engine_options(),
        limit=flags(("--limit", EVAL["limit"])) if EVAL["limit"] else "",
        env=" ".join(shlex.quote(f"{k}={v}") for k, v in EVAL["env"].items()),
        outdir=lambda w: f"results/{RUN}/samples/{w.model}",
        suite=SUITE.name,
        seed=EVAL["seed"],
    shell:
        "env {params.env} python -m evals generate --model {input.model:q} --suite {params.suite:q} "
        "--output {params.outdir:q} {params.benchmarks} {params.templates} {params.engine} {params.limit} "
        "--seed {params.seed:q} > {log:q} 2>&1"
