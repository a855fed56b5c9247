"""One command, a subcommand per pipeline step.

    <package> preflight | fingerprint | synthesize | shard | stats | climatology | train | evaluate | report | compare
              | verify | deps ...

Each subcommand is the `main(argv)` of the module that owns the step, so `python -m <package>.cli train --help`
and `python -m <package>.train --help` say the same thing. Modules are imported only when their step runs,
so the data steps never pay for importing torch.
"""

from __future__ import annotations

import importlib
import sys

from .errors import USER_ERROR_EXIT_CODE, ForgeError

# subcommand -> (module relative to this package, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "preflight": (".preflight", "check params.yaml against the data (variables, times, splits, channels, ...)"),
    "fingerprint": (".fingerprint", "describe data.source cheaply (sizes, mtimes, metadata; ETags for URLs)"),
    "synthesize": (".data.synthetic", "write the built-in synthetic atmosphere as a zarr store"),
    "shard": (".data.shard", "write one time block of the source as a zarr shard"),
    "static": (".data.statics", "write the static fields (data.static) beside the shards, normalized"),
    "stats": (".data.stats", "normalization statistics of the train split"),
    "climatology": (".climatology", "day-of-year x hour climatology (WB2 layout): train split or external"),
    "train": (".train", "train the model (a torchrun entry point)"),
    "launch": (".launch", "start training with torchrun / srun / mpiexec as the scheduler needs"),
    "evaluate": (".evaluate", "roll out on the test split and score against persistence and climatology"),
    "forecast": (".forecast", "write a forecast file in WeatherBench2 layout"),
    "report": (".report", "build the self-contained HTML report"),
    "compare": (".compare", "score differences of two experiments with block-bootstrap intervals"),
    "stations": (".stations", "sample a synthetic weather-station CSV from the shards (for the demo)"),
    "status": (".status", "`dvc status` after refreshing data.source's fingerprint (DVC cannot look at the source)"),
    "verify": (".verify", "check that outputs match dvc.lock and this commit"),
    "profile": (".profiles", "install the cluster profile so `snakemake --profile NAME` works"),
    "check-params": (".config", "validate params.yaml and print the resolved values"),
    "deps": (".deps", "each DVC stage's params and code deps, from the code; --check compares with dvc.yaml"),
    "ui": (".ui.server", "the web app: configure, launch, watch and compare experiments in a browser"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "usage: <package> COMMAND [options]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"error: unknown command '{name}'.{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0], __package__)
    try:
        return int(module.main(rest) or 0)
    except ForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE


if __name__ == "__main__":
    raise SystemExit(main())
