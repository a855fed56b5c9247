"""Make `snakemake --profile slurm` (or pbs) work as typed, from the project root.

    <package> profile install slurm     link ~/.config/snakemake/slurm -> <project>/profiles/slurm
    <package> profile install           the same for the site chosen when the project was made (.cruft.json)
    <package> profile uninstall slurm   remove that link (only if it points into this project)
    <package> profile list              this project's profiles and where a bare `--profile NAME` resolves

Snakemake resolves a bare profile name in the current directory, then in the user's config dir
(~/.config/snakemake/NAME, $XDG_CONFIG_HOME respected), then in the site's (/etc/xdg/snakemake/NAME); it applies
profiles/default/ (the per-rule resources) by itself. The link keeps the profile in the project, so edits and
`git pull` apply, and Snakemake finds the PBS scripts next to the linked config. A bare name can point to one
project only: installing over another project's link needs --force. `--profile profiles/slurm` always works
without installing anything. Every project has all three site profiles (local, slurm, pbs); the site answered at
bake time chose their presets (account, partition or queue, GPUs) and the default one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import cliargs
from .errors import ForgeError

WORKFLOW_PROFILE = "default"  # applied automatically; installing it as a global profile would be wrong
SITE_PROFILE = {"local": "local", "generic-slurm": "slurm", "generic-pbs": "pbs", "derecho": "pbs", "casper": "pbs"}


def user_config_dir() -> Path:
    """Snakemake's user profile folder (it uses platformdirs AppDirs("snakemake", "snakemake"))."""
    try:
        from platformdirs import user_config_dir as found
    except ImportError:  # platformdirs comes with snakemake; this is the same rule on Linux
        return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "snakemake"
    return Path(found("snakemake", "snakemake"))


def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: the current one) with a Snakefile and profiles/."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "Snakefile").is_file() and (folder / "profiles").is_dir():
            return folder
    raise ForgeError(f"{start}: not inside a project (no Snakefile with a profiles/ folder here or above). "
                     "Fix: cd into the project root and run the command again.")


def site_profiles(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "profiles").iterdir()
                  if p.is_dir() and p.name != WORKFLOW_PROFILE and (p / "config.yaml").is_file())


def default_profile(root: Path) -> str:
    """The profile of the site answered at bake time (.cruft.json), else "local"."""
    try:
        site = json.loads((root / ".cruft.json").read_text())["context"]["cookiecutter"]["site"]
    except (OSError, ValueError, KeyError, TypeError):
        site = "local"
    return SITE_PROFILE.get(site, "local")


def install(name: str, root: Path, dest_dir: Path, force: bool = False) -> Path:
    """Link dest_dir/name to root/profiles/name; returns the link. Refuses to replace anything it did not make."""
    available = site_profiles(root)
    if name not in available:
        raise ForgeError(f"profile '{name}': not in {root / 'profiles'} (there: {', '.join(available) or 'none'}). "
                         "Fix: pick one of those (`default` holds the per-rule resources and applies by itself).")
    target = (root / "profiles" / name).resolve()
    link = dest_dir / name
    if link.is_symlink():
        current = Path(os.readlink(link))
        current = current if current.is_absolute() else (link.parent / current)
        if current.resolve() == target:
            return link
        if not force:
            raise ForgeError(
                f"{link} already links to {current}: a bare `--profile {name}` can name one project's profile only. "
                f"Fix: `... profile install {name} --force` to point it to this project, or run "
                f"`snakemake --profile profiles/{name}` here.")
        link.unlink()
    elif link.exists():
        raise ForgeError(f"{link} exists and is not a link made by this command (your own profile?). "
                         f"Fix: move it away, or run `snakemake --profile profiles/{name}` here.")
    dest_dir.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)
    return link


def uninstall(name: str, root: Path, dest_dir: Path) -> bool:
    link = dest_dir / name
    if link.is_symlink() and link.resolve() == (root / "profiles" / name).resolve():
        link.unlink()
        return True
    return False


def resolves_to(name: str, cwd: Path, dest_dir: Path) -> Path | None:
    """Where `snakemake --profile NAME` run in cwd would find NAME (the order Snakemake searches)."""
    for folder in (cwd, dest_dir, Path("/etc/xdg/snakemake")):
        if (folder / name).exists():
            return (folder / name).resolve()
    return None


def main(argv: list[str] | None = None) -> int:
    parser = cliargs.parser("profile", __doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    for action in ("install", "uninstall"):
        p = sub.add_parser(action)
        p.add_argument("name", nargs="?", help="slurm | pbs | local (the folders under profiles/; default: the "
                                               "site chosen when the project was made)")
        p.add_argument("--dest", type=Path, default=None, help="profile folder (default: Snakemake's user one)")
        if action == "install":
            p.add_argument("--force", action="store_true", help="replace a link to another project's profile")
    p = sub.add_parser("list")
    p.add_argument("--dest", type=Path, default=None, help="profile folder (default: Snakemake's user one)")
    args = parser.parse_args(argv)
    root = project_root()
    dest = args.dest or user_config_dir()
    if args.action != "list" and not args.name:
        args.name = default_profile(root)
    if args.action == "install":
        link = install(args.name, root, dest, args.force)
        print(f"{link} -> {link.resolve()}\nNow, from {root}: snakemake --profile {args.name}")
    elif args.action == "uninstall":
        print(f"removed {dest / args.name}" if uninstall(args.name, root, dest) else
              f"{dest / args.name}: no link to this project's profile; nothing removed")
    else:
        for name in site_profiles(root):
            where = resolves_to(name, Path.cwd(), dest) or f"not found: run `profile install {name}`"
            mark = " (default)" if name == default_profile(root) else ""
            print(f"{name:8s} profiles/{name}   `--profile {name}` -> {where}{mark}")
    return 0
