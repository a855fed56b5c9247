# Training: one rule, launched by the package's launcher so the same rule runs as 1 process on a laptop,
# torchrun on one node, `srun torchrun` across Slurm nodes or `mpiexec torchrun` across PBS nodes.


rule train:
    input:
        params=ancient(PARAMS_FILE),
        shards=SHARDS,
        static=STATIC,
        stats=rules.stats.output.json,
    output:
        model=update("models/model.pt"),
        train_log=update("results/train_log.csv"),
    params:
        cli=CLI,
        read=PLAN.reads("train"),
        code=PLAN.code("train"),
        shards=lambda wildcards, input: Path(input.shards[0]).parent,
        run_dir="runs/train",  # checkpoints (resumed after an interruption); not an output: DVC leaves it alone
    resources:
        nodes=1,  # the profiles set these per site (profiles/*/config.yaml)
        tasks=1,  # processes per node: one per GPU, or CPU processes
    log:
        "logs/train.log",
    conda:
        "../envs/project.yaml"
    shell:
        "{params.cli} launch --nodes {resources.nodes} --nproc-per-node {resources.tasks} -- "
        "--params {input.params} --shards {params.shards} --stats {input.stats} --run-dir {params.run_dir} "
        "--out {output.model} --log {output.train_log} 2>&1 | tee {log}"
