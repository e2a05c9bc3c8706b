"""One merged model per config entry, from one spec file (pipeline.plan.Plan.merge_spec). Every
project file the merge depends on (the engine's and the method's import closure, merges.deps) is
an input and their joint hash a parameter, so editing (or touching) a method or a helper it uses
reruns those merges and everything downstream of them."""


localrules:
    merge_spec,
    check_fingerprint,


rule merge_spec:
    output:
        f"results/{RUN}/specs/{{merge_id}}.json",
    log:
        f"logs/{RUN}/merge_spec/{{merge_id}}.log",
    conda:
        "../envs/mergeeval.yaml"
    params:
        spec=lambda w: json.dumps(PLAN.merge_spec(w.merge_id), indent=2, sort_keys=True),
    shell:
        "printf '%s\\n' {params.spec:q} > {output:q}"


rule merge_model:
    input:
        spec=f"results/{RUN}/specs/{{merge_id}}.json",
        base=PLAN.model_dir("base"),
        experts=lambda w: [PLAN.model_dir(e) for e in PLAN.merge_experts(w.merge_id)],
        verified=f"results/{RUN}/models/verified.json",
        stats=lambda w: PLAN.merge_stats(w.merge_id),
        code=merge_code,
        fingerprint_code="merges/fingerprint.py",
    output:
        model=directory(f"results/{RUN}/models/{{merge_id}}"),
        fingerprint=PLAN.fingerprint_raw("{merge_id}"),
    log:
        f"logs/{RUN}/merge_model/{{merge_id}}.log",
    benchmark:
        f"benchmarks/{RUN}/merge_model/{{merge_id}}.tsv"
    wildcard_constraints:
        merge_id="|".join(map(re.escape, PLAN.merge_jobs)),
    conda:
        "../envs/mergeeval.yaml"
    resources:
        **PLAN.resources("merge"),
    params:
        code_sha256=merge_code_sha256,
    shell:
        "python -m merges run --spec {input.spec:q} --quiet "
        "--fingerprint {output.fingerprint:q} > {log:q} 2>&1"


rule check_fingerprint:
    """The merge's fingerprint (written by its merge job) against report.baseline_fingerprints,
    right after the merge and before any generation of it: a moved merge is named with its tensors
    on the console and in the report (and stops the DAG with report.stop_on_moved_merge). A local
    job without torch: a fraction of a second."""
    input:
        raw=PLAN.fingerprint_raw("{merge_id}"),
        baseline=PLAN.config["report"]["baseline_fingerprints"] or [],
    output:
        PLAN.fingerprint_file("{merge_id}"),
    log:
        f"logs/{RUN}/check_fingerprint/{{merge_id}}.log",
    conda:
        "../envs/mergeeval.yaml"
    params:
        options=PLAN.fingerprint_args(),
    shell:
        "python -m merges.fingerprint_check check {input.raw:q} --id {wildcards.merge_id:q} "
        "{params.options} -o {output:q} 2> {log:q} | tee -a {log:q}"
