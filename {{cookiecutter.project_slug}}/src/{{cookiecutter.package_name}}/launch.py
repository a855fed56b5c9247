"""Start training the way the machine needs: one launcher, so no rule or job script repeats this logic.

    <package> launch --nodes N --nproc-per-node P [--port PORT] [--print] -- <train args>

Everything after `--` goes to `python -m <package>.train`. What runs:
    no scheduler, N=1, P=1   train in this process (no torchrun; signals reach the trainer directly)
    no scheduler, N=1, P>1   torchrun --standalone --nproc-per-node P -m <package>.train
    inside a Slurm job       srun --nodes N --ntasks N --ntasks-per-node 1 torchrun --nnodes N --nproc-per-node P
                             --rdzv-backend c10d --rdzv-endpoint <first node>:<port> -m <package>.train
    inside a PBS job, N>1    mpiexec -n N -ppn 1 torchrun ... with the head node from $PBS_NODEFILE
                             (N=1: as without a scheduler; PBS signals every process of the job itself)
(torchrun is run as `python -m torch.distributed.run`, the same program, so the venv's torch is always the one used.)

Exit code: the trainer's. torchrun reports any failed worker as 1, so when the trainer checkpointed on a signal
(it writes <run-dir>/REQUEUE and exits 75) the launcher returns REQUEUE_EXIT_CODE (75) itself. Inside a Slurm
batch job it then asks Slurm to requeue the job (`scontrol requeue $SLURM_JOB_ID`): the job keeps its id, goes
back to PENDING, reruns the same rule, and training resumes from the newest checkpoint, while Snakemake keeps
polling the same job. Set FORGE_REQUEUE=0 to turn that off. On PBS (no self-requeue for users) the job fails
with 75 and the profile's `retries` resubmits it; training resumes the same way.

Signals and lifetime (lifetime.py): SIGTERM, SIGUSR1 or SIGHUP to the launcher is passed on to its child and from
there to every rank (each checkpoints and exits 75); if the launcher dies (even of SIGKILL) its child gets SIGTERM,
and torchrun workers die with torchrun. The launcher locks the run folder first: a second run on the same
--run-dir stops at once with a message naming the first.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import REQUEUE_EXIT_CODE, ForgeError
from .lifetime import LOCK_ENV, RunLock, terminate_with

DEFAULT_PORT = 29500  # rendezvous port base; inside a job the job id is added so jobs sharing a node differ
# torchrun forwards these to the workers and waits for them (default list lacks SIGUSR1, Slurm's warning signal)
FORWARDED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
# what the launcher passes on to its child (SIGINT reaches the whole foreground process group from a terminal)
FORWARDED = (signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP)
SHUTDOWN_TIMEOUT_S = 120  # how long torchrun waits for workers to checkpoint after a signal before SIGKILL


@dataclass(frozen=True)
class Plan:
    """How training starts: `command` is None for in-process training."""

    mode: str  # inprocess | local | slurm | pbs
    command: list[str] | None
    train_args: list[str]

    def describe(self) -> str:
        if self.command is None:
            return f"(in process) python -m {_package()}.train {shlex.join(self.train_args)}"
        return shlex.join(self.command)


def _package() -> str:
    return __package__ or __name__.rpartition(".")[0]


def scheduler(env: dict[str, str]) -> str | None:
    """'slurm' or 'pbs' when this process runs inside a batch allocation, else None."""
    if env.get("SLURM_JOB_ID"):
        return "slurm"
    if env.get("PBS_JOBID") and env.get("PBS_NODEFILE"):
        return "pbs"
    return None


def job_port(job_id: str, base: int = DEFAULT_PORT) -> int:
    """A rendezvous port derived from the job id: two jobs on one node do not collide."""
    digits = re.sub(r"\D", "", job_id.split(".")[0])
    return base + int(digits) % 1000 if digits else base


def slurm_allocation(env: dict[str, str]) -> tuple[list[str], int]:
    """(hostnames, CPUs per node) of this Slurm job.

    Snakemake's slurm-jobstep executor strips most SLURM_* variables before running a rule, so the nodes and CPUs
    are asked from Slurm (`scontrol show job`) unless the variables are still there.
    """
    nodelist, cpus = env.get("SLURM_JOB_NODELIST"), env.get("SLURM_JOB_CPUS_PER_NODE")
    if not nodelist or not cpus:
        out = _run(["scontrol", "show", "job", "--oneliner", env["SLURM_JOB_ID"]])
        fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
        nodelist = fields.get("NodeList", "")
        ncpus, nnodes = int(fields.get("NumCPUs", "1")), max(int(fields.get("NumNodes", "1").split("-")[0]), 1)
        cpus = str(ncpus // nnodes)
    hosts = _run(["scontrol", "show", "hostnames", nodelist]).split() if nodelist else []
    # SLURM_JOB_CPUS_PER_NODE looks like "8(x2),4": the smallest count fits every node
    per_node = min(int(part.split("(")[0]) for part in cpus.split(","))
    return hosts, per_node


def pbs_hosts(env: dict[str, str]) -> list[str]:
    """Distinct hosts of this PBS job, in $PBS_NODEFILE order (the first is the head node)."""
    lines = Path(env["PBS_NODEFILE"]).read_text().split()
    return list(dict.fromkeys(line.strip() for line in lines if line.strip()))


def torchrun(nodes: int, nproc: int, rdzv: str | None, rdzv_id: str | None, train_args: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    if rdzv is None:
        cmd += ["--standalone", "--nnodes", "1"]
    else:
        cmd += ["--nnodes", str(nodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv, "--rdzv-id", str(rdzv_id)]
    cmd += ["--nproc-per-node", str(nproc), "--max-restarts", "0",
            "--signals-to-handle", FORWARDED_SIGNALS, "--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S)]
    # `--` keeps torchrun's parser off the train options (it would read --log as its own --log-dir)
    return [*cmd, "-m", f"{_package()}.train", "--", *train_args]


def plan(nodes: int, nproc: int, train_args: list[str], env: dict[str, str] | None = None,
         port: int | None = None) -> Plan:
    """Decide how to start training from the requested size and the environment (no side effects but queries)."""
    env = dict(os.environ if env is None else env)
    if nodes < 1 or nproc < 1:
        raise ForgeError(f"launch: --nodes ({nodes}) and --nproc-per-node ({nproc}) must be >= 1. "
                         "Fix: set resources nodes/tasks of the train rule in profiles/default/config.yaml.")
    where = scheduler(env)
    if where == "pbs" and nodes == 1:
        where = None  # one PBS node needs no mpiexec (whose flags differ between MPI flavours): start it here
    if where is None:
        if nodes > 1:
            raise ForgeError(
                f"launch: --nodes {nodes} needs a Slurm or PBS allocation, and this process is not in one. "
                "Fix: run `snakemake --profile slurm` (or pbs), or set the train rule's nodes to 1 in "
                "profiles/default/config.yaml.")
        if nproc == 1:
            return Plan("inprocess", None, train_args)
        return Plan("local", torchrun(1, nproc, None, None, train_args), train_args)

    if where == "slurm":
        job = env["SLURM_JOB_ID"]
        if env.get("SLURM_STEP_ID"):  # a job step already holds the CPUs: a second srun would wait forever
            raise ForgeError(
                f"launch: this runs inside Slurm job step {job}.{env['SLURM_STEP_ID']}, where `srun` hangs. "
                "Fix: keep `mpi: 0` under set-resources: train in profiles/default/config.yaml (Snakemake then "
                "runs the rule in the batch step), or call the launcher from the batch script, not from `srun`.")
        hosts, cpus = slurm_allocation(env)
        _check_nodes(nodes, hosts, "Slurm job")
        rdzv = f"{hosts[0]}:{port or job_port(job)}"
        srun = ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1",
                f"--cpus-per-task={cpus}", "--mem=0", "--kill-on-bad-exit=1"]
        return Plan("slurm", srun + torchrun(nodes, nproc, rdzv, job, train_args), train_args)

    job = env["PBS_JOBID"]
    hosts = pbs_hosts(env)
    _check_nodes(nodes, hosts, "PBS job")
    rdzv = f"{hosts[0]}:{port or job_port(job)}"
    mpiexec = ["mpiexec", "-n", str(nodes), "-ppn", "1"]
    return Plan("pbs", mpiexec + torchrun(nodes, nproc, rdzv, job, train_args), train_args)


def _check_nodes(nodes: int, hosts: list[str], what: str) -> None:
    if not hosts:
        raise ForgeError(f"launch: could not find the nodes of this {what}.")
    if nodes > len(hosts):
        raise ForgeError(
            f"launch: the train rule asks for {nodes} nodes but this {what} has {len(hosts)} ({', '.join(hosts)}). "
            "Fix: make the train rule's `nodes` in profiles/default/config.yaml match the nodes the job requests.")


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ForgeError(f"launch: `{shlex.join(cmd)}` failed: {exc}") from None


def run_dir_of(train_args: list[str]) -> Path:
    """The trainer's --run-dir (where it writes REQUEUE), default runs/train as in train.py."""
    for i, arg in enumerate(train_args):
        if arg == "--run-dir" and i + 1 < len(train_args):
            return Path(train_args[i + 1])
        if arg.startswith("--run-dir="):
            return Path(arg.split("=", 1)[1])
    return Path("runs/train")


def run(p: Plan) -> int:
    """Run the plan; the exit code is the trainer's, REQUEUE_EXIT_CODE when it checkpointed on a signal.

    The launcher holds the run folder's lock and hands it to its child (torchrun keeps the descriptor open until
    its workers are gone); the child gets SIGTERM if the launcher dies; a signal to the launcher is passed on to
    the child, which passes it to every worker (torchrun --signals-to-handle, srun, mpiexec).
    """
    if p.command is None:
        from . import train  # lazily: torch is imported only when training runs

        return int(train.main(p.train_args) or 0)
    run_dir = run_dir_of(p.train_args)
    marker = run_dir / "REQUEUE"
    started = time.time()
    with RunLock(run_dir) as lock:
        child = subprocess.Popen(p.command, pass_fds=() if lock.fd is None else (lock.fd,),
                                 env={**os.environ, LOCK_ENV: str(lock.path)}, preexec_fn=terminate_with(os.getpid()))

        def forward(signum: int, _frame) -> None:
            child.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in FORWARDED}
        try:
            code = child.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    if code != 0 and marker.exists() and marker.stat().st_mtime >= started - 1:
        code = REQUEUE_EXIT_CODE
    return code


def requeue_slurm_job(job_id: str, wait_s: float = 600) -> bool:
    """Ask Slurm to requeue this job (it keeps its id); then wait to be stopped by it. False if Slurm refused."""
    result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"[launch] scontrol requeue {job_id} failed: {result.stderr.strip()}", file=sys.stderr, flush=True)
        return False
    print(f"[launch] requeued Slurm job {job_id}; it will rerun and resume from the checkpoint", file=sys.stderr,
          flush=True)
    stopped: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopped.append(signum))
    deadline = time.monotonic() + wait_s
    while not stopped and time.monotonic() < deadline:
        time.sleep(0.5)
    return True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, train_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="launch", description=__doc__.splitlines()[0], epilog=__doc__.split(
        "\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    parser.add_argument("--nproc-per-node", type=int, default=1, help="processes per node: GPUs, or CPU processes")
    parser.add_argument("--port", type=int, default=None, help="rendezvous port (default 29500 + job id mod 1000)")
    parser.add_argument("--print", action="store_true", help="print the command and exit")
    args = parser.parse_args(own)
    p = plan(args.nodes, args.nproc_per_node, train_args, port=args.port)
    print(f"[launch] {p.mode}: {p.describe()}", file=sys.stderr, flush=True)
    if args.print:
        return 0
    code = run(p)
    if code == REQUEUE_EXIT_CODE and p.mode == "slurm" and os.environ.get("FORGE_REQUEUE", "1") != "0":
        requeue_slurm_job(os.environ["SLURM_JOB_ID"])
    return code


if __name__ == "__main__":
    raise SystemExit(main())
