#!/usr/bin/env bash
# Run by Snakemake once, inside the new conda environment, from the project root: the lock, then the project.
set -euo pipefail
python -m pip install -r requirements/lock.txt
python -m pip install --no-deps -e .
