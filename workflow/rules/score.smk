"""Scores: one CPU job per batch of model folders (the same batches as generation), every
benchmark of every model in one process; the per-model score files land in scores/{model}/ and
the job's manifest, its output, is written last."""


localrules:
    score_request,


rule score_request:
    output:
        PLAN.request_file("score", "{batch}"),
    log:
        f"logs/{RUN}/score_request/{{batch}}.log",
    conda:
        "../envs/mergeeval.yaml"
    params:
        request=lambda w: json.dumps(PLAN.score_request(w.batch), indent=2),
    shell:
        "printf '%s\\n' {params.request:q} > {output:q}"


rule score_samples:
    input:
        request=PLAN.request_file("score", "{batch}"),
        generated=PLAN.batch_manifest("generate", "{batch}"),
    output:
        PLAN.batch_manifest("score", "{batch}"),
    log:
        f"logs/{RUN}/score_samples/{{batch}}.log",
    benchmark:
        f"benchmarks/{RUN}/score_samples/{{batch}}.tsv"
    conda:
        "../envs/mergeeval.yaml"
    threads: PLAN.eval["score_threads"]
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "EVALPLUS_WORKERS={threads} python -m evals score --request {input.request:q} "
        "--manifest {output:q} > {log:q} 2>&1"
