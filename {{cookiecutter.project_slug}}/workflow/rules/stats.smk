# Normalization statistics of the train split.


rule stats:
    """Per-channel mean/std and std of one-step differences, from the train split only."""
    input:
        params=ancient(PARAMS_FILE),
        shards=SHARDS,
    output:
        json=update("data/stats.json"),
    params:
        cli=CLI,
        read=PLAN.reads("stats"),
        code=PLAN.code("stats"),
        shards=lambda wildcards, input: Path(input.shards[0]).parent,
    log:
        "logs/stats.log",
    conda:
        "../envs/project.yaml"
    shell:
        "{params.cli} stats --params {input.params} --shards {params.shards} --out {output.json} 2>&1 | tee {log}"
