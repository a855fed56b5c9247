#!/usr/bin/env python3
"""Submit one Snakemake job script to PBS Pro and print its job id: `pbs-submit.py [--dry-run] JOBSCRIPT`.

The resources come from the job script's properties line (Snakemake writes `# properties = {json}` into it),
set per rule in profiles/default/config.yaml and by default in profiles/pbs/config.yaml:
    nodes (1)          chunks of `-l select=` (one per node)
    tasks (1)          processes per node            -> ncpus = tasks x cpus_per_task
    cpus_per_task (1)  CPUs per process
    ngpus (0)          GPUs per node                 -> ngpus=
    mem_mb             memory per node, MB           -> mem=
    runtime            minutes                       -> -l walltime=HH:MM:00
    pbs_account        -A          pbs_queue   -q
    pbs_extra          more qsub options, e.g. "-l job_priority=premium" or "-l gpu_type=a100"
--dry-run prints the qsub command instead of running it. Standard library only: it runs on any login node.
"""

import json
import shlex
import subprocess
import sys
from pathlib import Path


def properties(jobscript: str) -> dict:
    for line in Path(jobscript).read_text().splitlines()[:5]:
        if line.startswith("# properties = "):
            return json.loads(line[len("# properties = "):])
    sys.exit(f"pbs-submit: {jobscript} has no '# properties = ' line; is it a Snakemake job script?")


def walltime(minutes: float) -> str:
    hours, mins = divmod(int(round(float(minutes))), 60)
    return f"{hours:02d}:{mins:02d}:00"


def log_path(props: dict) -> Path:
    """logs/pbs/<rule>[/<wildcard values>].log under the working directory (PBS writes it when the job ends)."""
    name = props.get("rule") or f"group-{props.get('groupid', 'job')}"
    wildcards = "-".join(f"{v}" for v in (props.get("wildcards") or {}).values())
    return Path.cwd() / "logs" / "pbs" / (f"{name}/{wildcards}.log" if wildcards else f"{name}.log")


def qsub_command(props: dict, jobscript: str) -> list[str]:
    res = props.get("resources") or {}
    nodes = int(res.get("nodes") or 1)
    ncpus = int(res.get("tasks") or 1) * int(res.get("cpus_per_task") or props.get("threads") or 1)
    select = f"select={nodes}:ncpus={ncpus}"
    if int(res.get("ngpus") or 0) > 0:  # not `gpu`: the Slurm plugin reads that one (--gpus)
        select += f":ngpus={int(res['ngpus'])}"
    if res.get("mem_mb"):
        select += f":mem={int(res['mem_mb'])}mb"
    cmd = ["qsub", "-N", str(props.get("rule") or "snakejob")[:200], "-l", select]
    if res.get("runtime"):
        cmd += ["-l", f"walltime={walltime(res['runtime'])}"]
    if res.get("pbs_account"):
        cmd += ["-A", str(res["pbs_account"])]
    if res.get("pbs_queue"):
        cmd += ["-q", str(res["pbs_queue"])]
    # -j oe: one log; -r y: rerunnable after a node failure; -V: the submitting shell's environment (venv, PATH)
    cmd += ["-j", "oe", "-o", str(log_path(props)), "-r", "y", "-V"]
    cmd += shlex.split(str(res.get("pbs_extra") or ""))
    return [*cmd, jobscript]


def main(argv: list[str]) -> int:
    dry = "--dry-run" in argv
    args = [a for a in argv if a != "--dry-run"]
    if len(args) != 1:
        sys.exit("usage: pbs-submit.py [--dry-run] JOBSCRIPT")
    cmd = qsub_command(properties(args[0]), args[0])
    if dry:
        print(shlex.join(cmd))
        return 0
    log_path(properties(args[0])).parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(f"pbs-submit: `{shlex.join(cmd)}` failed ({done.returncode}):\n{done.stderr}{done.stdout}")
        return done.returncode
    print(done.stdout.strip().splitlines()[-1])  # the job id, e.g. 4321.desched1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
