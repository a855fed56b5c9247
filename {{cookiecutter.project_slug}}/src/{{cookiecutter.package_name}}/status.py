"""`dvc status`, with data.source looked at first.

    <package> status [dvc status options, e.g. --json shards]

DVC cannot look into data.source: it lies outside the repository, and hashing an archive of terabytes on every
`dvc status` would take hours. The `fingerprint` stage looks, cheaply (file sizes, mtimes and metadata), at the
start of every `dvc repro`. This command does the same first, rewriting data/source.fingerprint.json only when the
source changed, then runs `dvc status` with the options given: a changed source shows as a changed dependency of
the shards stage (plain `dvc status` shows only "workflow/dvc.yaml:fingerprint: always changed"). Not for use
inside a stage: DVC holds its lock while a stage runs.
"""

from __future__ import annotations

import subprocess
import sys

from . import fingerprint


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    changed = fingerprint.refresh(".")
    print(f"status: data.source {'CHANGED' if changed else 'unchanged'} since {fingerprint.FINGERPRINT} was written",
          file=sys.stderr)
    return subprocess.call([sys.executable, "-m", "dvc", "status", *args])


if __name__ == "__main__":
    raise SystemExit(main())
