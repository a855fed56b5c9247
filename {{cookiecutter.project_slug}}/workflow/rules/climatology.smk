# The climatology: its own stage and artifact, the reference of ACC and of the climatology forecast.


rule climatology:
    """Day-of-year x hour climatology of the train split in WeatherBench2's layout, or an external one selected to
    the shards' channels and grid (evaluate.climatology)."""
    input:
        SHARDS,
    output:
        directory("data/climatology.zarr"),
    params:
        section("data", "evaluate"),
    log:
        "logs/climatology.log",
    shell:
        "{CLI} climatology --params params.yaml --shards data/shards --out {output} 2>&1 | tee {log}"
