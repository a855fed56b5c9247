# Evaluation on the test split, then the report.


rule stations:
    """Synthetic weather stations for the demo: 200 random points of the test split of the shards, 0.5 K
    representativeness noise (stations.py). For real observations set evaluate.stations.file to their file."""
    input:
        params=ancient(PARAMS_FILE),
        shards=SHARDS,
    output:
        csv=update("data/stations.csv"),
    params:
        cli=CLI,
        read=PLAN.reads("stations"),
        code=PLAN.code("stations"),
        shards=lambda wildcards, input: Path(input.shards[0]).parent,
    log:
        "logs/stations.log",
    conda:
        "../envs/project.yaml"
    shell:
        "{params.cli} stations --params {input.params} --shards {params.shards} --out {output.csv} --n 200 "
        "--noise 2m_temperature=0.5 2>&1 | tee {log}"


rule evaluate:
    input:
        params=ancient(PARAMS_FILE),
        shards=SHARDS,
        static=STATIC,
        stats=rules.stats.output.json,
        model=rules.train.output.model,
        clim=rules.climatology.output.store,
        stations=[PLAN.params.evaluate.stations.file] if PLAN.params.evaluate.stations.file else [],
    output:
        metrics=update("results/metrics.json"),
        per_lead=update("results/per_lead.csv"),
        provenance=update("results/provenance.json"),
        evaluation=update("results/evaluation.json"),
        plots=update(directory("results/plots")),
        maps=update(directory("results/maps")),
        scores=update(directory("results/scores")),
        wb2=update(directory("results/wb2")),
    params:
        cli=CLI,
        read=PLAN.reads("evaluate"),
        code=PLAN.code("evaluate"),
        shards=lambda wildcards, input: Path(input.shards[0]).parent,
        results=lambda wildcards, output: Path(output.metrics).parent,
    log:
        "logs/evaluate.log",
    conda:
        "../envs/project.yaml"
    shell:
        "{params.cli} evaluate --params {input.params} --model {input.model} --shards {params.shards} "
        "--stats {input.stats} --climatology {input.clim} --out {params.results} 2>&1 | tee {log}"


rule report:
    input:
        metrics=rules.evaluate.output.metrics,
        per_lead=rules.evaluate.output.per_lead,
        provenance=rules.evaluate.output.provenance,
        evaluation=rules.evaluate.output.evaluation,
        plots=rules.evaluate.output.plots,
        maps=rules.evaluate.output.maps,
        scores=rules.evaluate.output.scores,
        train_log=rules.train.output.train_log,
    output:
        html=update("results/report.html"),
    params:
        cli=CLI,
        read=PLAN.reads("report"),
        code=PLAN.code("report"),
        results=lambda wildcards, input: Path(input.metrics).parent,
    log:
        "logs/report.log",
    conda:
        "../envs/project.yaml"
    shell:
        "{params.cli} report --results {params.results} --out {output.html} 2>&1 | tee {log}"
