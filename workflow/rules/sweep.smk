"""Sweeps: every point is a merge job (merge.smk) generated and scored on the validation suite
only (the val* batches of generate.smk and score.smk); the selection picks one point per swept
merge on validation and its folder becomes the merge's row, which alone meets the test suite.
"""


localrules:
    sweep_points,
    select_point,
    selected_merge,


rule sweep_points:
    output:
        PLAN.sweep_file("{swept}"),
    log:
        f"logs/{RUN}/sweep_points/{{swept}}.log",
    conda:
        "../envs/mergeeval.yaml"
    params:
        record=lambda w: json.dumps(PLAN.sweep_record(w.swept), indent=2),
    shell:
        "printf '%s\\n' {params.record:q} > {output:q}"


rule select_point:
    input:
        sweep=PLAN.sweep_file("{swept}"),
        scored=lambda w: [
            PLAN.batch_manifest("score", b) for b in PLAN.sweep_batches(w.swept)
        ],
    output:
        selection=PLAN.selection_file("{swept}"),
    log:
        f"logs/{RUN}/select_point/{{swept}}.log",
    conda:
        "../envs/mergeeval.yaml"
    shell:
        "python -m pipeline.select choose --sweep {input.sweep:q} --output {output.selection:q} "
        "2> {log:q} | tee -a {log:q}"


rule selected_merge:
    input:
        sweep=PLAN.sweep_file("{swept}"),
        selection=PLAN.selection_file("{swept}"),
        points=lambda w: [PLAN.merge_dir(p.id) for p in PLAN.points[w.swept]],
    output:
        model=directory(PLAN.merge_dir("{swept}")),
        fingerprint=PLAN.fingerprint_raw("{swept}"),
    log:
        f"logs/{RUN}/selected_merge/{{swept}}.log",
    conda:
        "../envs/mergeeval.yaml"
    shell:
        "python -m pipeline.select copy --sweep {input.sweep:q} --selection {input.selection:q} "
        "--output {output.model:q} --fingerprint-out {output.fingerprint:q} > {log:q} 2>&1"
