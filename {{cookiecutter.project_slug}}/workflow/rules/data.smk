# Source -> shards -> normalization statistics.


rule synthesize:
    """The built-in synthetic atmosphere (only when data.source is "synthetic")."""
    output:
        directory("data/synthetic.zarr"),
    params:
        section("seed", "data"),
    log:
        "logs/synthesize.log",
    shell:
        "{CLI} synthesize --params params.yaml --out {output} 2>&1 | tee {log}"


rule shard:
    """One time block of the source, canonicalized and checked, as its own zarr store."""
    input:
        ["data/synthetic.zarr"] if SYNTHETIC else [],
    output:
        directory("data/shards/block_{block}.zarr"),
    wildcard_constraints:
        block=r"\d{4}",
    params:
        section("data"),
    log:
        "logs/shard/{block}.log",
    shell:
        "{CLI} shard --params params.yaml --block {wildcards.block} --out {output} 2>&1 | tee {log}"


rule stats:
    """Per-channel mean/std and std of one-step differences, from the train split only."""
    input:
        SHARDS,
    output:
        "data/stats.json",
    params:
        section("data", "train"),
    log:
        "logs/stats.log",
    shell:
        "{CLI} stats --params params.yaml --shards data/shards --out {output} 2>&1 | tee {log}"


rule shards:
    """All shards and the static fields (a target: `snakemake shards`); removes shards of blocks that the params no
    longer plan, and static fields that data.static no longer asks for."""
    localrule: True
    input:
        SHARDS + STATIC,
    run:
        import shutil

        for stale in set(map(str, Path("data/shards").glob("block_*.zarr"))) - set(SHARDS):
            shutil.rmtree(stale)
        if not STATIC:
            shutil.rmtree("data/shards/static.zarr", ignore_errors=True)
