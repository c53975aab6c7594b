"""tools/gz1_limits.py in its quick mode on a small copy of the real GZ1 data: every stage
(ingest at two crops, seed runs, the TTA ensemble, confident learning, the error sheet) runs
through the public API and the page holds its tables; a second call trains nothing and keeps
the hand-written reading of the sheet. The quick numbers mean nothing (the page says so); the
full page is docs/results/gz1_limits.md."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import mini_shared_data

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.realdata


def _limits(base: Path, data: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "gz1_limits.py"), "--quick",
                           "--work", str(base / "work"), "--docs", str(base / "docs"),
                           "--data", str(data)], capture_output=True, text=True, timeout=600)


def test_quick_limits_page_runs_and_is_reused(tmp_path):
    data = mini_shared_data(tmp_path / "shared", gz1_rows=500, ceers_rows=300, pool=0)
    first = _limits(tmp_path, data)
    assert first.returncode == 0, first.stderr[-3000:]
    docs = tmp_path / "docs"
    page = (docs / "gz1_limits_quick.md").read_text()
    assert "QUICK SMOKE RUN" in page
    for part in ("## (a) Pixels on the galaxy", "(chosen on validation)", "GZ1 vote leaf",
                 "labels contradicted with confidence", "| most confident |"):
        assert part in page, part
    assert (docs / "gz1_limits_errors_quick.png").stat().st_size > 10_000
    summary = json.loads((docs / "gz1_limits_quick.json").read_text())
    base = summary["analysis"]["baseline"]
    assert sum(b["n"] for b in base["by_leaf"]) == base["n"] > 50
    accs = [c["accuracy"] for c in base["coverage"]]  # 100 %, 90 %, ..., 25 % most confident
    assert base["coverage"][0]["accuracy"] == pytest.approx(base["accuracy"])
    assert accs[-1] >= accs[0] - 1e-9
    assert 0 <= base["error_rate"] < 1 and 0 <= base["ambiguous"] <= 1
    # (f): CEERS's vote counts behind each label, against what the estimate flags
    assert "## (f) Does the estimate point at doubtful labels?" in page
    ceers = summary["ceers"]
    assert sum(b["n"] for b in ceers["bins"]) == ceers["n"] > 50
    assert ceers["n_flagged"] == round(sum(b["n"] * b["flagged"] for b in ceers["bins"]))
    # a second call reuses every run and keeps what a person wrote about the sheet
    text = page.replace("_Write what the sheet shows here._", "Read by a person.")
    (docs / "gz1_limits_quick.md").write_text(text)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "work" / "runs").rglob("*.pt")}
    again = _limits(tmp_path, data)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert "Read by a person." in (docs / "gz1_limits_quick.md").read_text()
