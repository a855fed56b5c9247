#!/usr/bin/env python3
"""Print the state of one PBS job for Snakemake: `pbs-status.py JOBID` -> running | success | failed.

PBS Pro: `qstat -fx JOBID` (-x: finished jobs too) gives job_state and, once finished, Exit_status.
    Q H W T S M B R E  (queued, held, waiting, in transit, suspended, moved, array begun, running, exiting)
                            -> running
    F X                     -> success if Exit_status is 0, else failed (negative: killed by PBS, e.g. walltime;
                               above 256: killed by a signal)
Torque-style qstat without -x (e.g. Slurm's slurm-wlm-torque wrappers, used by the tests) shows finished jobs as
C without an exit status; then the exit status is asked from Slurm (`scontrol show job`) when it is there.
A job that no qstat knows any more is reported failed (Snakemake then reruns it, if retries are set).
"""

import re
import shutil
import subprocess
import sys

RUNNING = set("QHWTSMBRE")
FINISHED = set("FXC")


def qstat(jobid: str) -> tuple[str | None, int | None]:
    """(job_state, Exit_status) from `qstat -fx`, else from `qstat -f`; (None, None) if unknown."""
    for args in (["qstat", "-fx", jobid], ["qstat", "-f", jobid]):
        try:
            out = subprocess.run(args, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        state = re.search(r"^\s*job_state = (\S+)", out.stdout, re.M | re.I)
        if out.returncode == 0 and state:
            code = re.search(r"^\s*exit_status = (-?\d+)", out.stdout, re.M | re.I)
            return state.group(1).upper(), int(code.group(1)) if code else None
    return None, None


def slurm_exit_code(jobid: str) -> int | None:
    """Exit code of a job on the Slurm-backed stand-in (its qstat shows none)."""
    if not shutil.which("scontrol"):
        return None
    out = subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True).stdout
    state = re.search(r"JobState=(\S+)", out)
    code = re.search(r"ExitCode=(\d+):(\d+)", out)
    if not state or not code:
        return None
    return 0 if state.group(1) == "COMPLETED" and code.group(1) == "0" else int(code.group(1)) or 1


def status(jobid: str) -> str:
    state, code = qstat(jobid)
    if state is None:
        print(f"pbs-status: qstat knows no job {jobid}", file=sys.stderr)
        return "failed"
    if state in RUNNING:
        return "running"
    if state in FINISHED:
        if code is None:
            code = slurm_exit_code(jobid)
        return "success" if code == 0 else "failed"
    print(f"pbs-status: job {jobid} has unknown state {state}", file=sys.stderr)
    return "running"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: pbs-status.py JOBID")
    print(status(sys.argv[1]))
