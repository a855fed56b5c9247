#!/usr/bin/env bash
# stop-local-slurm.sh - cancel the jobs, then stop exactly the daemons start-local-slurm.sh started, by PID
# (read from $SLURM_STARTED), newest first, and remove the config files it created. Daemons and files it did not
# make are left alone. --purge also wipes state.
set -u
STARTED=${SLURM_STARTED:-/run/forge-slurm.started}
[ -s "$STARTED" ] && command -v squeue >/dev/null && squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null
if [ -s "$STARTED" ]; then
  tac "$STARTED" | while read -r name pid; do
    if [ "$name" = file ]; then rm -f "$pid"; continue; fi  # a config file the start script created
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && { echo "$name ($pid) did not stop; sending SIGKILL" >&2; kill -9 "$pid"; }
    fi
  done
  rm -f "$STARTED"
fi
if [ "${1:-}" = --purge ]; then
  rm -rf /var/lib/slurm/slurmctld/* /var/lib/slurm/slurmd/*
fi
