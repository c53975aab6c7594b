"""tools/bench_gpu.sh: the GPU benchmark's CPU smoke mode runs the same three steps.

No GPU is available to the test suite, so the script is run with `--device cpu --smoke`
(tiny sizes, the tiny test backbone): ingest, train and predict must all run through the
public API and print the table the GPU run prints.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "bench_gpu.sh"


def run_script(*args, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": str(ROOT / ".venv" / "bin" / "python")}
    if not Path(env["PYTHON"]).exists():
        env.pop("PYTHON")
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=600, cwd=tmp_path)


def test_cpu_smoke_runs_ingest_train_predict(tmp_path):
    out = tmp_path / "gpu.json"
    proc = run_script("--device", "cpu", "--smoke", "--work", tmp_path / "work", "--json", out,
                      tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| step | objects | seconds | objects/s |" in proc.stdout
    result = json.loads(out.read_text())
    steps = [r["step"] for r in result["rows"]]
    assert len(steps) == 3 and steps[0].startswith("ingest") and steps[1].startswith("train")
    assert steps[2] == "predict (fp32)"
    assert result["rows"][2]["n"] == 500 and all(r["n"] > 0 for r in result["rows"])
    assert (tmp_path / "work" / "predict.parquet").exists()


def test_cuda_without_a_gpu_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here: the full benchmark would run")
    proc = run_script("--device", "cuda", tmp_path=tmp_path)
    assert proc.returncode != 0
    assert "no GPU is visible" in proc.stderr and "Traceback" not in proc.stderr
