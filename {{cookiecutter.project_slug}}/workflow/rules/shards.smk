# Source -> shards: the built-in synthetic atmosphere (when data.source is "synthetic"), then one job per time block.


rule synthesize:
    """The built-in synthetic atmosphere (only when data.source is "synthetic")."""
    input:
        params=ancient(PARAMS_FILE),
    output:
        store=directory("data/synthetic.zarr"),
    params:
        cli=CLI,
        read=PLAN.reads("synthesize"),
        code=PLAN.code("synthesize"),
    log:
        "logs/synthesize.log",
    conda:
        "../envs/project.yaml"
    shell:
        "{params.cli} synthesize --params {input.params} --out {output.store} 2>&1 | tee {log}"


rule shard:
    """One time block of the source, canonicalized and checked, as its own zarr store."""
    input:
        params=ancient(PARAMS_FILE),
        fingerprint=ancient(rules.fingerprint.output.json),
        synthetic=rules.synthesize.output.store if PLAN.synthetic else [],
    output:
        shard=directory("data/shards/block_{block}.zarr"),
    wildcard_constraints:
        block=r"\d{4}",
    params:
        cli=CLI,
        read=PLAN.reads("shard"),
        code=PLAN.code("shard"),
    log:
        "logs/shard/{block}.log",
    conda:
        "../envs/project.yaml"
    shell:
        "{params.cli} shard --params {input.params} --block {wildcards.block} --out {output.shard} 2>&1 | tee {log}"


rule static:
    """The time-invariant input fields (data.static) on the shards' grid, normalized; only when data.static lists any."""
    input:
        params=ancient(PARAMS_FILE),
        fingerprint=ancient(rules.fingerprint.output.json),
        synthetic=rules.synthesize.output.store if PLAN.synthetic else [],
    output:
        store=directory("data/shards/static.zarr"),
    params:
        cli=CLI,
        read=PLAN.reads("static"),
        code=PLAN.code("static"),
    log:
        "logs/static.log",
    conda:
        "../envs/project.yaml"
    shell:
        "{params.cli} static --params {input.params} --out {output.store} 2>&1 | tee {log}"


SHARDS = expand(rules.shard.output.shard, block=PLAN.blocks)
STATIC = [rules.static.output.store] if PLAN.params.data.static else []


rule shards_index:
    """The shards' index: one digest per store, what DVC's stages that read the shards depend on."""
    localrule: True
    input:
        shards=SHARDS,
        static=STATIC,
    output:
        index="data/shards/index.json",
    log:
        "logs/shards_index.log",
    run:
        pipeline.write_shards_index(input.shards + input.static, output.index, log[0])


rule shards:
    """All shards and their index (a target: `snakemake shards`); removes shards of blocks that the params no longer
    plan."""
    localrule: True
    input:
        shards=SHARDS,
        static=STATIC,
        index=rules.shards_index.output.index,
    log:
        "logs/shards.log",
    run:
        pipeline.remove_stale_shards(input.shards + input.static, log[0])
