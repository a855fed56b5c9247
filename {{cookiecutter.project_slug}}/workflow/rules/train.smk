# Training: one rule, launched by the package's launcher so the same rule runs as 1 process on a laptop,
# torchrun on one node, `srun torchrun` across Slurm nodes or `mpiexec torchrun` across PBS nodes.


rule train:
    input:
        SHARDS + STATIC,
        "data/stats.json",
    output:
        "models/model.pt",
        "results/train_log.csv",
    params:
        section("seed", "data", "model", "train", "wandb"),
    resources:
        nodes=1,  # the profiles set these per site (profiles/*/config.yaml)
        tasks=1,  # processes per node: one per GPU, or CPU processes
    log:
        "logs/train.log",
    shell:
        "{CLI} launch --nodes {resources.nodes} --nproc-per-node {resources.tasks} -- "
        "--params params.yaml --shards data/shards --stats data/stats.json "
        "--run-dir runs/train --out models/model.pt --log results/train_log.csv 2>&1 | tee {log}"
