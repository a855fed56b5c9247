# Evaluation on the test split, then the report.


rule stations:
    """Synthetic weather stations for the demo: 200 random points of the test split of the shards, 0.5 K
    representativeness noise (stations.py). For real observations set evaluate.stations.file to their file."""
    input:
        SHARDS,
    output:
        "data/stations.csv",
    params:
        section("seed", "data"),
    log:
        "logs/stations.log",
    shell:
        "{CLI} stations --params params.yaml --shards data/shards --out {output} --n 200 "
        "--noise 2m_temperature=0.5 2>&1 | tee {log}"


rule evaluate:
    input:
        SHARDS,
        "data/stats.json",
        "models/model.pt",
        [PARAMS.evaluate.stations.file] if PARAMS.evaluate.stations.file else [],
    output:
        "results/metrics.json",
        "results/per_lead.csv",
        "results/provenance.json",
        "results/evaluation.json",
        directory("results/plots"),
        directory("results/maps"),
        directory("results/scores"),
        directory("results/wb2"),
    params:
        section("seed", "data", "evaluate"),
    log:
        "logs/evaluate.log",
    shell:
        "{CLI} evaluate --params params.yaml --model models/model.pt --shards data/shards "
        "--stats data/stats.json --out results 2>&1 | tee {log}"


rule report:
    input:
        "results/metrics.json",
        "results/per_lead.csv",
        "results/provenance.json",
        "results/evaluation.json",
        "results/train_log.csv",
        "results/plots",
        "results/maps",
        "results/scores",
    output:
        "results/report.html",
    log:
        "logs/report.log",
    shell:
        "{CLI} report --results results --out {output} 2>&1 | tee {log}"
