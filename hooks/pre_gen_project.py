"""Check every cookiecutter answer before anything is written.

Each bad answer gets one line naming the question, the value, what is wrong and how to fix it (with "did you mean"
for a near miss); all problems are reported together and the bake stops (exit 1) before a single file of the
project exists. forge_bake.py (a cookiecutter extension) keeps cookiecutter from printing a traceback after them.
"""

import difflib
import keyword
import re
import sys

ANSWERS = {
    "project_name": {{ cookiecutter.project_name | jsonify }},
    "project_slug": {{ cookiecutter.project_slug | jsonify }},
    "package_name": {{ cookiecutter.package_name | jsonify }},
    "author_email": {{ cookiecutter.author_email | jsonify }},
    "license": {{ cookiecutter.license | jsonify }},
    "model": {{ cookiecutter.model | jsonify }},
    "data_source": {{ cookiecutter.data_source | jsonify }},
    "site": {{ cookiecutter.site | jsonify }},
    "account": {{ cookiecutter.account | jsonify }},
    "partition": {{ cookiecutter.partition | jsonify }},
    "gpus_per_node": {{ cookiecutter.gpus_per_node | jsonify }},
    "use_wandb": {{ cookiecutter.use_wandb | jsonify }},
    "dvc_remote": {{ cookiecutter.dvc_remote | jsonify }},
}

# The options of the questions with a fixed set of answers (cookiecutter.json `_choices`). They are free-text
# questions, so that a wrong answer reaches this hook (cookiecutter's own choice questions stop a bad
# `key=value` with a traceback before any hook runs).
CHOICES = {{ cookiecutter._choices | jsonify }}
# Names that would shadow a dependency or the standard library when imported.
TAKEN_PACKAGE_NAMES = {
    "torch", "numpy", "xarray", "zarr", "dask", "pandas", "yaml", "pydantic", "snakemake", "dvc", "wandb",
    "matplotlib", "test", "tests", "src", "data", "config", "json", "os", "sys", "io", "time", "typing", "random",
}  # fmt: skip
REMOTE_SCHEMES = ("s3://", "gs://", "azure://", "ssh://", "hdfs://", "http://", "https://", "webdav://", "oss://")
SOURCE_SCHEMES = ("gs://", "s3://", "http://", "https://", "file://", "az://", "abfs://")


def problems(a: dict) -> list[str]:
    out = []

    def bad(question: str, what: str, fix: str) -> None:
        out.append(f"  {question} = {a[question]!r}: {what}. Fix: {fix}")

    if not a["project_name"].strip():
        bad("project_name", "is empty", "give the project a name, e.g. 'ERA5 Z500 UNet'")
    if not re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", a["project_slug"]):
        bad("project_slug", "must be lowercase letters, digits and single '-' between them, starting with a letter",
            "e.g. 'era5-z500-unet'")  # fmt: skip
    pkg = a["package_name"]
    if not re.fullmatch(r"[a-z][a-z0-9_]*", pkg) or keyword.iskeyword(pkg) or pkg.endswith("_"):
        bad("package_name", "is not a valid lowercase Python package name", "use letters, digits and '_', e.g. 'era5_unet'")
    elif pkg in TAKEN_PACKAGE_NAMES or pkg in sys.stdlib_module_names:
        bad("package_name", "would shadow an existing module of that name", f"pick another, e.g. '{pkg}_forecast'")
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", a["author_email"]):
        bad("author_email", "is not an e-mail address", "e.g. 'jane@ucar.edu'")
    for question, allowed in CHOICES.items():
        if a[question] not in allowed:
            close = difflib.get_close_matches(a[question].lower(), [o.lower() for o in allowed], n=1, cutoff=0.6)
            hint = f"did you mean '{allowed[[o.lower() for o in allowed].index(close[0])]}'? " if close else ""
            bad(question, "is not one of the options", f"{hint}use one of {', '.join(allowed)}")
    source = a["data_source"].strip()
    if not source:
        bad("data_source", "is empty", "use 'synthetic' or the path/URL of a zarr or netCDF dataset")
    elif "://" in source and not source.startswith(SOURCE_SCHEMES):
        bad("data_source", "has an unsupported URL scheme", f"use one of {', '.join(SOURCE_SCHEMES)} or a local path")
    elif source != "synthetic" and "://" not in source and not re.search(r"\.(zarr|nc|nc4|netcdf|h5)(/|\*|$)", source):
        bad("data_source", "does not look like a zarr store or netCDF file(s)",
            "point at a '.zarr' store or '.nc' file(s) (globs allowed), or use 'synthetic'")  # fmt: skip
    if a["site"] in ("derecho", "casper") and not re.fullmatch(r"[A-Za-z0-9_]+", a["account"]):
        bad("account", f"is required on {a['site'].capitalize()} (jobs without a project code are rejected)",
            "give your NCAR project code, e.g. 'UABC0001'")  # fmt: skip
    elif a["account"] and not re.fullmatch(r"[A-Za-z0-9_.-]+", a["account"]):
        bad("account", "has characters a scheduler account cannot have", "use letters, digits, '_', '-', '.'")
    if a["site"] in CHOICES["site"] and a["site"] != "local" and not re.fullmatch(r"[A-Za-z0-9_.-]+", a["partition"]):
        bad("partition", "is empty or not a valid partition/queue name", "give the Slurm partition or PBS queue")
    try:
        gpus = int(a["gpus_per_node"])
    except ValueError:
        gpus = None
    if gpus is None or not 0 <= gpus <= 16:
        bad("gpus_per_node", "must be a whole number from 0 to 16", "e.g. 4 on Derecho, 0 to train on CPUs")
    remote = a["dvc_remote"].strip()
    if "://" in remote and not remote.startswith(REMOTE_SCHEMES):
        bad("dvc_remote", "has a URL scheme DVC cannot use", f"use a folder path or one of {', '.join(REMOTE_SCHEMES)}")
    return out


if __name__ == "__main__":
    found = problems(ANSWERS)
    if found:
        print("ERROR: cannot create the project; these answers need fixing:\n" + "\n".join(found), file=sys.stderr)
        sys.exit(1)
