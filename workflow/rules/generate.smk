"""Samples: one job per batch of model folders (eval.models_per_job; pipeline.plan.Plan.batches),
one vLLM engine for all of them. Its request file lists every target (folder, template policy,
benchmarks); its manifest, the job's output, is written last. The samples beside it are kept by
an interrupted job and reused by the next one when their request key matches. The batch's merges
are fingerprinted first (merge.smk); a fingerprint check that runs again (a new baseline) does not
make the generation run again."""


localrules:
    generate_request,


rule generate_request:
    output:
        PLAN.request_file("generate", "{batch}"),
    log:
        f"logs/{RUN}/generate_request/{{batch}}.log",
    conda:
        "../envs/mergeeval.yaml"
    params:
        request=lambda w: json.dumps(PLAN.generate_request(w.batch), indent=2),
    shell:
        "printf '%s\\n' {params.request:q} > {output:q}"


rule generate_samples:
    input:
        request=PLAN.request_file("generate", "{batch}"),
        models=lambda w: PLAN.batch_model_dirs(w.batch),
        fingerprints=lambda w: [ancient(f) for f in PLAN.batch_fingerprints(w.batch)],
        templates=lambda w: PLAN.batch_template_dirs(w.batch),
        data=PLAN.data_inputs(),
    output:
        PLAN.batch_manifest("generate", "{batch}"),
    log:
        f"logs/{RUN}/generate_samples/{{batch}}.log",
    benchmark:
        f"benchmarks/{RUN}/generate_samples/{{batch}}.tsv"
    conda:
        "../envs/mergeeval.yaml"
    threads: PLAN.eval["threads"]
    resources:
        gpu=PLAN.eval["gpus"],
        mem_mb=PLAN.eval["mem_mb"],
        runtime=lambda w: PLAN.generate_runtime(w.batch),
    params:
        env=PLAN.env_prefix(),
    shell:
        "env {params.env} python -m evals generate --request {input.request:q} "
        "--manifest {output:q} > {log:q} 2>&1"
