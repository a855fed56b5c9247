"""Cluster profiles: `<package> profile install NAME` makes the bare `snakemake --profile NAME` find this project's
profile, and never replaces a profile it did not make."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys

import pytest
import yaml


@pytest.fixture()
def profiles(pkg_name):
    return importlib.import_module(f"{pkg_name}.profiles")


def site_profile(project_root):
    names = [p.name for p in (project_root / "profiles").iterdir() if p.is_dir() and p.name != "default"]
    return sorted(names)[0]


def test_every_profile_is_valid_yaml_and_the_workflow_profile_owns_set_resources(project_root):
    default = yaml.safe_load((project_root / "profiles" / "default" / "config.yaml").read_text())
    assert set(default) == {"set-resources"}  # a key here would silently replace the same key of a site profile
    assert {"nodes", "tasks"} <= set(default["set-resources"]["train"])
    for config in (project_root / "profiles").glob("*/config.yaml"):
        loaded = yaml.safe_load(config.read_text())
        assert isinstance(loaded, dict), config
        if config.parent.name != "default":
            assert "set-resources" not in loaded, f"{config}: per-rule resources belong in profiles/default"


def test_install_links_the_profile_where_snakemake_looks(profiles, project_root, tmp_path):
    name = site_profile(project_root)
    link = profiles.install(name, project_root, tmp_path)
    assert link.is_symlink() and link.resolve() == (project_root / "profiles" / name).resolve()
    assert profiles.install(name, project_root, tmp_path) == link  # again: nothing changes
    assert profiles.resolves_to(name, tmp_path / "elsewhere", tmp_path) == link.resolve()
    assert profiles.uninstall(name, project_root, tmp_path) and not link.exists()


def test_install_refuses_to_replace_another_projects_profile(profiles, project_root, tmp_path, pkg):
    name = site_profile(project_root)
    other = tmp_path / "other" / name
    other.mkdir(parents=True)
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / name).symlink_to(other)
    with pytest.raises(pkg.errors.ForgeError, match="one project's profile only"):
        profiles.install(name, project_root, tmp_path / "dest")
    assert profiles.install(name, project_root, tmp_path / "dest", force=True).resolve() != other
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / name).mkdir()  # the user's own profile folder: never touched, even with --force
    with pytest.raises(pkg.errors.ForgeError, match="not a link made by this command"):
        profiles.install(name, project_root, tmp_path / "mine", force=True)


def test_unknown_profile_names_the_ones_there(profiles, project_root, tmp_path, pkg):
    with pytest.raises(pkg.errors.ForgeError, match="not in .*profiles"):
        profiles.install("lsf", project_root, tmp_path)
    with pytest.raises(pkg.errors.ForgeError):
        profiles.install("default", project_root, tmp_path)  # the workflow profile applies by itself


def test_cli_installs_into_snakemakes_user_config_dir(pkg_name, project_root, tmp_path):
    name = site_profile(project_root)
    env = {"XDG_CONFIG_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(project_root / "src")}
    done = subprocess.run([sys.executable, "-m", f"{pkg_name}.cli", "profile", "install", name],
                          cwd=project_root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "snakemake" / name).resolve() == (project_root / "profiles" / name).resolve()


def test_every_project_has_every_site_profile(project_root):
    """Local, Slurm and PBS in every bake: moving to a cluster is a change of profile, not a re-bake."""
    names = {p.name for p in (project_root / "profiles").iterdir() if (p / "config.yaml").is_file()}
    assert names == {"default", "local", "slurm", "pbs"}
    assert yaml.safe_load((project_root / "profiles/slurm/config.yaml").read_text())["executor"] == "slurm"
    assert yaml.safe_load((project_root / "profiles/pbs/config.yaml").read_text())["executor"] == "cluster-generic"
    train = yaml.safe_load((project_root / "profiles/default/config.yaml").read_text())["set-resources"]["train"]
    assert "gpu" not in train, "the Slurm plugin reads `gpu` (--gpus); PBS GPUs are `ngpus`"
    assert {"mpi", "slurm_extra", "ngpus"} <= set(train)


def test_install_without_a_name_uses_the_site_chosen_at_bake_time(profiles, project_root, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(project_root / "profiles", root / "profiles")
    (root / "Snakefile").write_text("")
    for site, expected in (("derecho", "pbs"), ("generic-slurm", "slurm"), ("local", "local")):
        (root / ".cruft.json").write_text(json.dumps({"context": {"cookiecutter": {"site": site}}}))
        assert profiles.default_profile(root) == expected
    (root / ".cruft.json").unlink()
    assert profiles.default_profile(root) == "local"
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(project_root / "src")}
    (root / ".cruft.json").write_text(json.dumps({"context": {"cookiecutter": {"site": "generic-pbs"}}}))
    done = subprocess.run([sys.executable, "-m", f"{profiles.__package__}.cli", "profile", "install"], cwd=root,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "config" / "snakemake" / "pbs").resolve() == (root / "profiles" / "pbs").resolve()
