# Static fields (data.static): one job, beside the shards, only when data.static lists any.
# Include it from the Snakefile BEFORE data.smk (`include: "workflow/rules/static.smk"`); STATIC is the output to
# add to the inputs of the `shards` rule, so `snakemake shards` (the DVC shards stage) builds it too.

STATIC = ["data/shards/static.zarr"] if PARAMS.data.static else []


rule static:
    """The time-invariant input fields, on the shards' grid, normalized (data/shards/static.zarr)."""
    input:
        ["data/synthetic.zarr"] if SYNTHETIC else [],
    output:
        directory("data/shards/static.zarr"),
    params:
        section("data"),
    log:
        "logs/static.log",
    shell:
        "{CLI} static --params params.yaml --out {output} 2>&1 | tee {log}"
