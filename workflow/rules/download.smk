"""Models and calibration prompts: downloaded at pinned revisions, or generated for the demo."""


rule download_model:
    output:
        directory("resources/hub/{repo}/{revision}"),
    log:
        "logs/download/{repo}/{revision}.log",
    conda:
        "../envs/mergeeval.yaml"
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        repo_id=lambda w: w.repo.replace("--", "/"),
    shell:
        "python -m merges download --repo-id {params.repo_id:q} --revision {wildcards.revision:q} --output {output:q} > {log:q} 2>&1"


rule make_tiny_models:
    output:
        [directory(f"resources/tiny/{name}") for name in ("base", "math", "code", "if")],
    log:
        "logs/make_tiny_models.log",
    conda:
        "../envs/mergeeval.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m merges make-tiny --output resources/tiny --force > {log:q} 2>&1"


rule verify_models:
    input:
        base=PLAN.model_dir("base"),
        experts=[PLAN.model_dir(e) for e in EXPERTS],
    output:
        f"results/{RUN}/models/verified.json",
    log:
        f"logs/{RUN}/verify_models.log",
    benchmark:
        f"benchmarks/{RUN}/verify_models.tsv"
    conda:
        "../envs/mergeeval.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        experts=lambda w, input: argv(*[("--expert", e) for e in input.experts]),
    shell:
        "python -m merges verify --base {input.base:q} {params.experts} --output {output:q} > {log:q} 2>&1"


rule download_prompts:
    output:
        prompts="resources/calibration/{dataset}/{revision}/{split}-{select}-{column}-n{n}.jsonl",
        selection="resources/calibration/{dataset}/{revision}/{split}-{select}-{column}-n{n}.jsonl.meta.json",
    log:
        "logs/download_prompts/{dataset}/{revision}/{split}-{select}-{column}-n{n}.log",
    wildcard_constraints:
        select="sampled|first",
        column="auto|messages|prompt",
        n=r"\d+",
    conda:
        "../envs/mergeeval.yaml"
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        dataset=lambda w: w.dataset.replace("--", "/"),
    shell:
        "python -m merges download-prompts --dataset {params.dataset:q} --revision {wildcards.revision:q} "
        "--split {wildcards.split:q} --select {wildcards.select:q} --column {wildcards.column:q} "
        "--n {wildcards.n:q} --output {output.prompts:q} > {log:q} 2>&1"


rule fetch_evalplus_data:
    """The EvalPlus release from `eval.evalplus_data` (a path or mirror URL), sha256 checked and
    recorded in its sidecar, for machines without GitHub access."""
    output:
        PLAN.evalplus_file(),
    log:
        f"logs/{RUN}/fetch_evalplus_data.log",
    conda:
        "../envs/mergeeval.yaml"
    params:
        options=argv(
            ("--source", (PLAN.eval["evalplus_data"] or {}).get("source")),
            ("--sha256", (PLAN.eval["evalplus_data"] or {}).get("sha256")),
        ),
    shell:
        "python -m evals fetch-data {params.options} --output {output:q} > {log:q} 2>&1"
