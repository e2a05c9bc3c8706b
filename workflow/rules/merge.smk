"""One merged model per config entry. Every project file the merge depends on (the engine's and
the method's import closure, merges.deps) is an input and their joint hash a parameter, so editing
(or touching) a method or a helper it uses reruns those merges and everything downstream of them.
"""


rule merge_model:
    input:
        base=model_dir("base"),
        experts=[model_dir(e) for e in EXPERTS],
        verified=f"results/{RUN}/models/verified.json",
        stats=merge_stats,
        code=merge_code,
    output:
        directory(f"results/{RUN}/models/{{merge_id}}"),
    log:
        f"logs/{RUN}/merge_model/{{merge_id}}.log",
    conda:
        "../envs/mergeeval.yaml"
    resources:
        gpu=MD["gpus"],
        mem_mb=MD["mem_mb"],
        runtime=MD["runtime"],
    params:
        method=lambda w: MERGES[w.merge_id]["method"],
        code_sha256=lambda w: code_record(method_module(w.merge_id))["sha256"],
        options=lambda w, input: flags(
            *[("--expert", e) for e in input.experts],
            *[("--stats", st) for st in input.stats],
            *[
                ("--param", f"{k}={v}")
                for k, v in MERGES[w.merge_id].get("params", {}).items()
            ],
            ("--tokenizer-from", model_dir(MODELS.get("tokenizer_from", EXPERTS[0]))),
            *[
                (f"--{k.replace('_', '-')}", merge_setting(w.merge_id, k))
                for k in ("dtype", "rest_policy", "factor_dtype")
            ],
            ("--device", MD["device"]),
        ),
    shell:
        "python -m merges run --method {params.method:q} --base {input.base:q} {params.options} "
        "--output {output:q} --force --quiet > {log:q} 2>&1"
