# The climatology: its own stage and artifact, the reference of ACC and of the climatology forecast.


rule climatology:
    """Day-of-year x hour climatology of the train split in WeatherBench2's layout, or an external one on the
    shards' channels and grid (evaluate.climatology)."""
    input:
        params=ancient(PARAMS_FILE),
        shards=SHARDS,
    output:
        store=update(directory("data/climatology.zarr")),
    params:
        cli=CLI,
        read=PLAN.reads("climatology"),
        code=PLAN.code("climatology"),
        shards=lambda wildcards, input: Path(input.shards[0]).parent,
    log:
        "logs/climatology.log",
    conda:
        "../envs/project.yaml"
    shell:
        "{params.cli} climatology --params {input.params} --shards {params.shards} --out {output.store} "
        "2>&1 | tee {log}"
