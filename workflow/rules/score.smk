"""Scores: one job per (model, benchmark), CPU only, from the sample files."""


rule score_samples:
    input:
        manifest=f"results/{RUN}/samples/{{model}}/generation.json",
    output:
        f"results/{RUN}/scores/{{model}}/{{benchmark}}.json",
    log:
        f"logs/{RUN}/score_samples/{{model}}/{{benchmark}}.log",
    conda:
        "../envs/mergeeval.yaml"
    threads: PLAN.eval["score_threads"]
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        samples=lambda w: PLAN.samples_file(w.model, w.benchmark),
    shell:
        "EVALPLUS_WORKERS={threads} python -m evals score --benchmark {wildcards.benchmark:q} "
        "--samples {params.samples:q} --output {output:q} > {log:q} 2>&1"
