"""Plugin discovery: built-ins, a real third-party package via entry points, allow/block
lists, and isolation of broken plugins."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from astrotransfer.store import CutoutStore
from conftest import error_lines, run_cli

@pytest.fixture(autouse=True)
def plain_cli_processes(monkeypatch):
    """Plugins are installed into the environment while these tests run: each command must
    discover them from a fresh interpreter, as a user's would, not from a forkserver that
    imported the entry points' world before the install (conftest.run_cli)."""
    monkeypatch.setenv("ASTROTRANSFER_TEST_CLI", "subprocess")


TOY_SURVEY = '''
"""A third-party survey: flat-field noise stamps, enough to prove the plugin path."""
import numpy as np
from astrotransfer import hookimpl
from astrotransfer.survey import Candidate, IngestSource, Option, Survey


class ToySource(IngestSource):
    def candidates(self):
        return [Candidate(f"toy{i}", 10.0 + i, -5.0, i % 2) for i in range(self.extra_attrs["n"])]

    def load(self, cand):
        rng = np.random.default_rng(int(cand.object_id[3:]))
        return rng.random((2, self.image_size, self.image_size), dtype=np.float32)


class ToySurvey(Survey):
    name = "toy"
    description = "toy survey from a third-party package"
    options = [Option("n", int, 5, "objects")]

    def open(self, n=5):
        return ToySource(survey="toy", bands=("a", "b"), pixel_scale=1.0, image_size=8,
                         class_names=["x", "y"], extra_attrs={"n": n})


@hookimpl
def register_surveys(register):
    register(ToySurvey())
'''

BROKEN_HOOK = '''
from astrotransfer import hookimpl

@hookimpl
def register_adapters(register):
    raise RuntimeError("boom in hook")
'''


BROKEN_COMMANDS = '''
from astrotransfer import hookimpl

@hookimpl
def register_commands(app):
    raise RuntimeError("boom in register_commands")
'''

# Importable (on PYTHONPATH) but installed with no entry point: it must never be loaded.
SNEAKY = '''
import os
from pathlib import Path
Path(os.environ["SNEAKY_MARKER"]).write_text("imported")
from astrotransfer import hookimpl
from astrotransfer.survey import Survey

class Sneaky(Survey):
    name = "sneaky"

@hookimpl
def register_surveys(register):
    register(Sneaky())
'''


def _package(root: Path, name: str, module_src: str) -> Path:
    pkg = root / name
    (pkg / name).mkdir(parents=True)
    (pkg / name / "__init__.py").write_text(module_src)
    (pkg / "pyproject.toml").write_text(textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name.replace('_', '-')}"
        version = "1.2.3"
        [project.entry-points.astrotransfer]
        {name} = "{name}"
        [tool.setuptools]
        packages = ["{name}"]
    '''))
    return pkg


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Third-party packages really built and pip-installed into a private target folder."""
    root = tmp_path_factory.mktemp("thirdparty")
    target = root / "site"
    for name, src in [("astro_toy", TOY_SURVEY), ("astro_broken_hook", BROKEN_HOOK),
                      ("astro_broken_import", "raise ImportError('missing dependency xyz')\n"),
                      ("astro_broken_commands", BROKEN_COMMANDS)]:
        pkg = _package(root, name, src)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--no-build-isolation", "--target", str(target), str(pkg)],
                       check=True, capture_output=True)
    return target


def _list(env=None) -> tuple[list[dict], str]:
    proc = run_cli("plugins", "list", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def test_builtins_listed():
    entries, _ = _list()
    have = {(e["kind"], e["name"]) for e in entries}
    for needed in [("survey", "images"), ("survey", "sim"), ("backbone", "timm"),
                   ("adapter", "finetune"), ("trainer", "standard")]:
        assert needed in have, needed
    assert all(set(e) == {"name", "kind", "dist", "version"} for e in entries)
    assert {e["dist"] for e in entries} == {"astrotransfer"}


def test_third_party_survey_is_listed_and_ingests(site, tmp_path):
    env = {"PYTHONPATH": str(site)}
    entries, stderr = _list(env)
    toy = [e for e in entries if e["name"] == "toy"]
    assert toy == [{"name": "toy", "kind": "survey", "dist": "astro-toy", "version": "1.2.3"}]
    # broken plugins are reported by name, and the CLI still works
    assert "astro_broken_import" in stderr and "missing dependency xyz" in stderr
    assert "astro_broken_hook" in stderr and "boom in hook" in stderr
    assert any(e["name"] == "finetune" for e in entries)
    out = tmp_path / "toy.zarr"
    proc = run_cli("ingest", "toy", "--n", "7", "--out", out, env=env)
    assert proc.returncode == 0, proc.stderr
    store = CutoutStore.open(out)
    assert store.n == 7 and store.bands == ["a", "b"] and store.attrs["survey"] == "toy"


def test_allow_and_block_lists(site):
    base = {"PYTHONPATH": str(site)}
    blocked, _ = _list({**base, "ASTROTRANSFER_DISABLE_PLUGINS": "astro_toy"})
    assert not any(e["name"] == "toy" for e in blocked)
    allowed, stderr = _list({**base, "ASTROTRANSFER_PLUGINS": "astro-toy"})
    assert any(e["name"] == "toy" for e in allowed)
    assert "astro_broken_hook" not in stderr  # not on the allow-list: never imported
    none, _ = _list({**base, "ASTROTRANSFER_PLUGINS": ""})
    assert not any(e["dist"] != "astrotransfer" for e in none)
    assert any(e["name"] == "images" for e in none)  # built-ins always load


def test_unknown_names_are_one_line(tmp_path):
    proc = run_cli("train", "--source", tmp_path / "none.zarr", "--out", tmp_path / "r",
                   "--adapt", "nosuch")
    lines = error_lines(proc.stderr)
    assert proc.returncode != 0 and len(lines) == 1 and "nosuch" in lines[0]
    assert "finetune" in lines[0]


def test_plugin_raising_in_register_commands_is_reported_and_the_cli_works(site, tmp_path):
    env = {"PYTHONPATH": str(site)}
    proc = run_cli("ingest", "toy", "--n", "4", "--out", tmp_path / "t.zarr", env=env)
    assert proc.returncode == 0, proc.stderr
    warned = [ln for ln in proc.stderr.splitlines() if "astro_broken_commands" in ln]
    assert len(warned) == 1 and "boom in register_commands" in warned[0], proc.stderr
    assert "Traceback" not in proc.stderr
    # the built-in commands registered through the same hook are all still there
    helped = run_cli("--help", env=env)
    for command in ("similar", "rank", "study", "launch", "crossmatch"):
        assert command in helped.stdout, command
    check = run_cli("store", "check", tmp_path / "t.zarr", env=env)
    assert check.returncode == 0 and "4 objects" in check.stdout


def test_plugins_load_only_from_installed_entry_points(site, tmp_path):
    """A module on the path is never imported as a plugin, even when the allow-list names
    it: only entry points of installed distributions are candidates."""
    folder = tmp_path / "path"
    folder.mkdir()
    (folder / "sneaky.py").write_text(SNEAKY)
    marker = tmp_path / "imported"
    env = {"PYTHONPATH": f"{folder}{os.pathsep}{site}", "SNEAKY_MARKER": str(marker)}
    for allow in (None, "sneaky", "sneaky,astro_toy"):
        extra = {} if allow is None else {"ASTROTRANSFER_PLUGINS": allow}
        entries, _ = _list({**env, **extra})
        assert not any(e["name"] == "sneaky" for e in entries)
        assert not marker.exists(), f"sneaky.py was imported (allow-list {allow!r})"
    proc = run_cli("ingest", "sneaky", "--out", tmp_path / "s.zarr",
                   env={**env, "ASTROTRANSFER_PLUGINS": "sneaky"})
    lines = error_lines(proc.stderr)
    assert proc.returncode != 0 and "unknown survey 'sneaky'" in lines[-1]
    assert not marker.exists()
