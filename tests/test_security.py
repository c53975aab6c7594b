"""Nothing a user is handed (run directories, checkpoints, DeepSpeed state) runs code on load.

The payload used throughout is a pickled object whose unpickling creates a folder (the
marker): a loader that unpickled code would leave the marker behind. Each test first proves
the payload is live (`torch.load(weights_only=False)` does create the marker), so a passing
test means the loader refused it, not that the payload was inert.
"""
from __future__ import annotations

import ast
import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY_BACKBONE, error_lines, run_cli, tiny_run_copy

CODE = ("core", "plugins", "surveys", "tools")


class PickledCode:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def poison(path: Path, marker: Path) -> None:
    """Add the payload to a checkpoint, keeping everything else in it."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    state["extra"] = PickledCode(marker)
    torch.save(state, path)


def assert_payload_is_live(path: Path, marker: Path) -> None:
    probe = path.with_name("probe.pt")
    shutil.copy(path, probe)
    torch.load(probe, weights_only=False)
    assert marker.exists(), "the payload should run when unpickled without weights_only"
    marker.rmdir()
    probe.unlink()


# ---------------------------------------------------------------- every load site


def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _calls(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, _dotted(node.func), parents


def _inside_weights_only_loads(node, parents) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.With) and any(
                isinstance(i.context_expr, ast.Call)
                and _dotted(i.context_expr.func).endswith("weights_only_loads")
                for i in node.items):
            return True
    return False


def test_every_load_site_is_weights_only():
    """torch.load always with weights_only=True; DeepSpeed's own loader (which asks for
    weights_only=False) only inside `weights_only_loads`; no pickle/yaml/numpy code loaders."""
    torch_loads, problems = [], []
    for folder in CODE:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for call, name, parents in _calls(path):
                where = f"{path.relative_to(ROOT)}:{call.lineno}"
                kw = {k.arg: k.value for k in call.keywords}
                if name == "torch.load":
                    torch_loads.append(where)
                    wo = kw.get("weights_only")
                    if not (isinstance(wo, ast.Constant) and wo.value is True):
                        problems.append(f"{where}: torch.load without weights_only=True")
                elif name.endswith(".load_checkpoint") and name != "load_checkpoint" \
                        and not _inside_weights_only_loads(call, parents):
                    problems.append(f"{where}: {name} outside weights_only_loads")
                elif name in ("pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load",
                              "torch.jit.load", "joblib.load", "dill.load"):
                    problems.append(f"{where}: {name} can run code")
                elif name.endswith(("np.load", "numpy.load")):
                    ap = kw.get("allow_pickle")
                    if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                        problems.append(f"{where}: np.load with allow_pickle")
    assert not problems, problems
    assert len(torch_loads) >= 3, torch_loads  # the scan does see the known sites


@pytest.fixture(scope="module")
def run_dir(tiny_run_master, tmp_path_factory) -> Path:
    return tiny_run_copy(tiny_run_master, tmp_path_factory.mktemp("sec") / "run")


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_pickled_checkpoint_is_refused_through_the_cli(run_dir, sim_pair, tmp_path, command):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    marker = tmp_path / "MARKER"
    for name in ("best.pt", "last.pt"):
        poison(run / name, marker)
    assert_payload_is_live(run / "best.pt", marker)
    extra = ["--out", tmp_path / "cat.csv"] if command == "predict" else []
    proc = run_cli(command, run, "--data", sim_pair[0], *extra)
    lines = error_lines(proc.stderr)
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr
    assert "best.pt needs pickled code" in lines[0] and "posix.mkdir" in lines[0], lines[0]
    assert "refused" in lines[0]
    assert not marker.exists()
    assert not (tmp_path / "cat.csv").exists() and not (run / "eval").exists()


@pytest.mark.slow
def test_pickled_deepspeed_state_is_refused_on_resume(sim_pair, tmp_path):
    """DeepSpeed's engine.load_checkpoint asks torch.load for weights_only=False; resuming a
    deepspeed run still never unpickles code, while a clean resume still works."""
    src = sim_pair[0]
    base = ["train", "--source", src, "--trainer", "deepspeed", "--backbone", TINY_BACKBONE,
            "--pretrained", "none", "--batch-size", "16", "--device", "cpu", "--zero-stage", "2"]
    run = tmp_path / "run"
    assert run_cli(*base, "--out", run, "--epochs", "1").returncode == 0
    clean = tmp_path / "clean"
    shutil.copytree(run, clean)
    ok = run_cli(*base, "--out", clean, "--epochs", "2", "--resume")
    assert ok.returncode == 0, ok.stderr  # DeepSpeed's state loads under weights_only
    assert "resuming" in ok.stderr
    states = sorted(run.glob("deepspeed/*/*optim_states.pt"))
    assert states, list(run.rglob("*"))
    marker = tmp_path / "MARKER"
    poison(states[0], marker)
    assert_payload_is_live(states[0], marker)
    proc = run_cli(*base, "--out", run, "--epochs", "2", "--resume")
    lines = error_lines(proc.stderr)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert [ln for ln in lines if ln.startswith("error:")] == [lines[-1]]
    assert "needs pickled code" in lines[-1] and "posix.mkdir" in lines[-1], lines[-1]
    assert not marker.exists()
