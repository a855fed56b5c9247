# The source's fingerprint: the shards depend on the data, not only on its name.


rule fingerprint:
    """File list, sizes, mtimes and metadata hashes of data.source (ETags for URLs); reads no data. It reruns when
    the source's digest (computed while the DAG is built) changes, and so do the shards."""
    localrule: True
    input:
        params=ancient(PARAMS_FILE),
    output:
        json="data/source.fingerprint.json",
    params:
        cli=CLI,
        read=PLAN.reads("fingerprint"),
        code=PLAN.code("fingerprint"),
        digest=PLAN.source_digest,
    log:
        "logs/fingerprint.log",
    conda:
        "../envs/project.yaml"
    shell:
        "{params.cli} fingerprint --params {input.params} --out {output.json} 2>&1 | tee {log}"
