"""What each DVC stage depends on, computed from the code: the one source of truth for dvc.yaml's deps and params.

    <package> deps            every stage's params and code deps, as dvc.yaml must list them
    <package> deps --check    compare with dvc.yaml; exit 1 naming each missing or extra entry and its fix
    <package> deps --write    rewrite each stage's params and code deps in dvc.yaml (comments and data deps kept)

Code: a stage runs Snakemake rules (`--allowed-rules` in its dvc.yaml command); a rule runs `<package>` commands
(RULES below; its shell line says `{params.cli} COMMAND`); cli.COMMANDS maps a command to its module. The stage's
code deps are the .smk files that define its rules plus the import closure of those modules: every module they
import relatively or by the package's name, found by parsing (nothing is imported), with the __init__.py of each
package on the way. cli.py and __main__.py are left out: they only dispatch to the module and change no output.
Params: RULES lists the params.yaml keys each rule reads ("section.*" = every leaf of the section, from
config.py); the rules declare exactly these (`params: read=reads("RULE")`) and a stage's dvc.yaml params are
their leaves, merged over its rules. Add a module, an import or a params key read, then run `<package> deps`.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from . import cliargs, dvcfile
from .config import Params
from .fileio import atomic_write_text

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name
DISPATCH_ONLY = ("cli.py", "__main__.py")
RULES_DIR = "workflow/rules"


@dataclass(frozen=True)
class Rule:
    commands: tuple[str, ...]  # `<package>` commands its shell line runs
    reads: tuple[str, ...]  # params.yaml keys it reads: leaves, or "section.*" for all leaves under a section


RULES: dict[str, Rule] = {
    "fingerprint": Rule(("fingerprint",), ("data.source",)),
    "synthesize": Rule(("synthesize",), ("seed", "data.start", "data.end", "data.synthetic.*")),
    "shard": Rule(("shard",), ("data.source", "data.variables", "data.levels", "data.start", "data.end",
                               "data.time_stride", "data.coarsen", "data.block_size", "data.synthetic.step_hours",
                               "data.rename", "data.grid")),
    "static": Rule(("static",), ("data.source", "data.rename", "data.start", "data.end", "data.coarsen",
                                 "data.grid", "data.static", "data.static_source")),
    "shards": Rule((), ()),  # removes shards the plan no longer has
    "shards_index": Rule((), ()),  # data/shards/index.json (data/integrity.py, run by the shard command too)
    "stats": Rule(("stats",), ("data.splits.train", "train.lead_hours")),
    "climatology": Rule(("climatology",), ("data.splits.train", "evaluate.climatology",
                                           "evaluate.climatology_window_days", "evaluate.climatology_window_shape")),
    "train": Rule(("launch",), ("seed", "data.splits.train", "data.static", "model.*", "train.*", "wandb.*")),
    "evaluate": Rule(("evaluate",), ("data.splits.train", "data.splits.test", "data.static", "train.lead_hours",
                                     "evaluate.*")),
    "report": Rule(("report",), ()),
    "stations": Rule(("stations",), ("seed", "data.splits.test")),
}


def leaves(model: type[BaseModel] = Params, prefix: str = "") -> list[str]:
    """Every leaf key of the params schema, dotted, in schema order."""
    out = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out += leaves(kind, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def param_keys(rules: list[str] | tuple[str, ...]) -> list[str]:
    """The leaf keys the rules read, "section.*" expanded, in schema order."""
    wanted = [key for rule in rules for key in RULES[rule].reads]
    return [leaf for leaf in leaves()
            if any(leaf == key or (key.endswith(".*") and leaf.startswith(key[:-1])) for key in wanted)]


# ----------------------------------------------------------------------------------------------------------------
# import closure


def _module_file(dotted: str) -> Path | None:
    """The file of module `PACKAGE.x.y` (x/y.py or x/y/__init__.py under the package), None if not ours."""
    parts = dotted.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(path: Path) -> list[str]:
    """The package a module file belongs to, as name parts (for pkg/data/stats.py and pkg/data/__init__.py alike:
    [pkg, data])."""
    return [PACKAGE, *path.relative_to(PACKAGE_DIR).parts[:-1]]


def _parsed_imports(text: bytes, path: Path) -> list[str]:
    """Dotted names `path` imports (anywhere in it, lazily or not), each a module or maybe one (`from . import x`)."""
    found = set()
    package = _package_of(path)
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}  # `from . import x`: x may be a module
    return sorted(found)


# Every Snakemake start (and so every DVC stage) computes its rules' code digests (pipeline.Plan.code); parsing the
# package costs about a quarter of a second, so each file's imports are kept by the sha256 of its text, next to
# Python's own bytecode cache. A file that changed is parsed again; a cache that cannot be read or written is skipped.
IMPORTS_CACHE = "__pycache__/forge-imports.json"  # in the package folder: {relative path: [sha256, [dotted names]]}


@functools.cache
def _imports_cache(file: Path) -> dict[str, list]:
    try:
        cache = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


@functools.cache
def imported_modules(path: Path) -> frozenset[str]:
    """Dotted names of the package's modules that `path` imports (anywhere in it, lazily or not)."""
    text = path.read_bytes()
    digest = hashlib.sha256(text).hexdigest()
    file = PACKAGE_DIR / IMPORTS_CACHE
    cache, key = _imports_cache(file), path.relative_to(PACKAGE_DIR).as_posix()
    entry = cache.get(key)
    if isinstance(entry, list) and len(entry) == 2 and entry[0] == digest:
        names = entry[1]
    else:
        names = _parsed_imports(text, path)
        cache[key] = [digest, names]
        try:
            atomic_write_text(file, json.dumps(cache, sort_keys=True))
        except OSError:
            pass  # a read-only install: parsed every time
    return frozenset(m for m in names if _module_file(m))  # which names are modules: looked up every time


def _with_parents(dotted: str) -> list[str]:
    parts = dotted.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def closure(modules: list[str]) -> dict[Path, str]:
    """{file: why} for the modules and everything they import, with their packages' __init__.py."""
    found: dict[Path, str] = {}
    todo = [(m, "entry") for m in modules]
    while todo:
        dotted, why = todo.pop()
        for name in _with_parents(dotted):
            path = _module_file(name)
            if path is None or path in found or path.name in DISPATCH_ONLY:
                continue
            found[path] = why if name == dotted else f"package of {dotted}"
            todo += [(m, f"imported by {path.relative_to(PACKAGE_DIR).as_posix()}") for m in imported_modules(path)]
    return found


# ----------------------------------------------------------------------------------------------------------------
# the stages


def rule_files(root: Path) -> dict[str, str]:
    """{rule: .smk file defining it, relative to root}."""
    found = {}
    for smk in sorted((root / RULES_DIR).glob("*.smk")):
        for name in re.findall(r"^rule (\w+):", smk.read_text(), re.M):
            found[name] = smk.relative_to(root).as_posix()
    return found


def code_deps(root: Path, rules: list[str]) -> dict[str, str]:
    """{path relative to root: why} of the code the rules run."""
    from .cli import COMMANDS

    modules = [f"{PACKAGE}{COMMANDS[c][0]}" for rule in rules for c in RULES[rule].commands]
    where = rule_files(root)
    found = {where[r]: f"defines rule {r}" for r in rules if r in where}
    src = root / "src" / PACKAGE
    for path, why in closure(modules).items():
        found[(src / path.relative_to(PACKAGE_DIR)).relative_to(root).as_posix()] = why
    return dict(sorted(found.items()))


def _is_code(path: str) -> bool:
    return path.startswith(("src/", f"{RULES_DIR}/"))


def _declared_code(root: Path, stage: dvcfile.Stage) -> set[str]:
    """The stage's code deps as dvc.yaml lists them, folders expanded to their .py/.smk files."""
    out = set()
    for dep in filter(_is_code, stage.deps):
        target = root / dep
        files = sorted(p for p in target.rglob("*") if p.suffix in (".py", ".smk")) if target.is_dir() else [target]
        out |= {f.relative_to(root).as_posix() for f in files}
    return out


def stage_problems(root: Path, stage: dvcfile.Stage) -> list[str]:
    """How the stage's entry in its dvc.yaml differs from what its code reads and imports."""
    where = f"{stage.file} stage {stage.name}"
    unknown = [r for r in stage.rules() if r not in RULES]
    if unknown:
        return [f"{where}: rule(s) {unknown} are not in deps.RULES. Fix: add them there "
                f"(src/{PACKAGE}/deps.py) with the commands they run and the params they read."]
    expected, declared = code_deps(root, stage.rules()), _declared_code(root, stage)
    problems = [f"{where}: deps lack {path} ({why}). Fix: add `- {path}` to "
                f"stages.{stage.name}.deps." for path, why in expected.items() if path not in declared]
    problems += [f"{where}: deps list {path}, which its rules {stage.rules()} never run. "
                 f"Fix: remove it from stages.{stage.name}.deps." for path in sorted(declared - set(expected))]
    keys = param_keys(stage.rules())
    problems += [f"{where}: params lack {key} (read by its rules). Fix: add `- {key}` to "
                 f"stages.{stage.name}.params." for key in keys if key not in stage.params]
    problems += [f"{where}: params list {key}, which its rules do not read (or not a leaf "
                 f"key). Fix: remove it from stages.{stage.name}.params." for key in stage.params if key not in keys]
    return problems


def check(root: Path | str = ".") -> list[str]:
    """Problems of every Snakemake-running stage of the dvc.yaml files (an empty list: they agree with the code)."""
    root = Path(root)
    return [p for stage in dvcfile.stages(root).values() if stage.rules() for p in stage_problems(root, stage)]


def render(root: Path | str = ".") -> str:
    """The params and code deps of every stage, in dvc.yaml's layout."""
    lines = []
    for stage in dvcfile.stages(root).values():
        if stage.rules():
            lines += [f"  {stage.name}:", "    params:", *[f"      - {k}" for k in param_keys(stage.rules())],
                      "    deps (code):", *[f"      - {p}" for p in code_deps(Path(root), stage.rules())]]
    return "\n".join(lines)


def _replace_list(lines: list[str], start: int, key: str, items: list[str]) -> list[str]:
    """Within the stage starting at lines[start], replace the `    key:` list by `items` (kept entries first)."""
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() and not lines[i].startswith("    ")),
               len(lines))
    head = next((i for i in range(start, end) if lines[i] == f"    {key}:"), None)
    if head is None:
        return lines
    stop = next((i for i in range(head + 1, end) if not lines[i].startswith("      - ")), end)
    return lines[: head + 1] + [f"      - {item}" for item in items] + lines[stop:]


def write(root: Path | str = ".") -> list[Path]:
    """Rewrite the params and code deps of every Snakemake-running stage of the dvc.yaml files from the code; the
    files rewritten."""
    root = Path(root)
    written, all_stages = [], dvcfile.stages(root).values()
    for dvc_file in dvcfile.DVC_FILES:
        stages = [s for s in all_stages if s.file == dvc_file and s.rules()]
        if not stages:
            continue
        path = root / dvc_file
        lines = path.read_text().splitlines()
        for stage in stages:
            start = lines.index(f"  {stage.name}:")
            lines = _replace_list(lines, start, "params", param_keys(stage.rules()))
            data = [d for d in stage.deps if not _is_code(d)]
            in_file = [p if stage.wdir == "." else os.path.relpath(p, stage.wdir)  # as the file writes paths
                       for p in data + list(code_deps(root, stage.rules()))]
            lines = _replace_list(lines, start, "deps", in_file)
        atomic_write_text(path, "\n".join(lines) + "\n")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = cliargs.parser("deps", __doc__)
    p.add_argument("--check", action="store_true", help="compare with dvc.yaml; exit 1 on any difference")
    p.add_argument("--write", action="store_true", help="rewrite dvc.yaml's params and code deps from the code")
    p.add_argument("--root", default=".", help="project root (default: .)")
    args = p.parse_args(argv)
    if args.write:
        print(f"wrote {', '.join(map(str, write(args.root)))}", file=sys.stderr)
        return 0
    if not args.check:
        print(render(args.root))
        return 0
    problems = check(args.root)
    print("\n".join(problems) or "dvc.yaml: deps and params agree with the code", file=sys.stderr)
    return 1 if problems else 0
