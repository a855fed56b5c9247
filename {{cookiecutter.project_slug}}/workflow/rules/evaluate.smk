# Evaluation on the test split, then the report.


rule evaluate:
    input:
        SHARDS,
        "data/stats.json",
        "models/model.pt",
    output:
        "results/metrics.json",
        "results/per_lead.csv",
        "results/provenance.json",
        "results/evaluation.json",
        directory("results/plots"),
        directory("results/maps"),
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
    output:
        "results/report.html",
    log:
        "logs/report.log",
    shell:
        "{CLI} report --results results --out {output} 2>&1 | tee {log}"
