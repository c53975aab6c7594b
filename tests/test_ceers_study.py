"""The GZ1 -> JWST CEERS transfer study (tools/ceers_results.py) in its quick mode, on the
real shared data: every stage of the study runs end to end through the public API, and the
page it writes holds the tables, the plots, the test split's size and runnable commands.
The numbers of the quick mode mean nothing (tiny sizes; the page says so): the full study's
page is docs/results/ceers.md."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import shared_data

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ceers_study_quick_mode_runs_end_to_end(tmp_path):
    data = shared_data("jwst_ceers").parent
    shared_data("gz1_sdss")
    docs = tmp_path / "docs"
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "ceers_results.py"), "--quick",
                          "--work", str(tmp_path / "work"), "--docs", str(docs),
                          "--data", str(data)], capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    page = (docs / "ceers_quick.md").read_text()
    assert "QUICK SMOKE RUN" in page
    for section in ("## (a), (b), (d)", "## (c) few-shot", "## (e) label-free model selection",
                    "## A new user's commands", "**Answer:**", "beyond two standard errors"):
        assert section in page, section
    for png in ("ceers_few_shot_quick.png", "ceers_methods_quick.png", "ceers_tsne_quick.png"):
        assert (docs / png).stat().st_size > 10_000, png
    summary = json.loads((docs / "ceers_quick_summary.json").read_text())
    assert summary["test_n"] > 300 and 0 < summary["hp_test_n"] < summary["test_n"]
    assert f"Test split: {summary['test_n']} CEERS objects" in page
    results = json.loads((docs / "ceers_quick.json").read_text())
    kinds = {r["key"][0] for r in results}
    assert {"zero-shot", "mmd", "recursive", "few-shot imagenet", "few-shot gz1",
            "few-shot adapted"} <= kinds
    for r in results:
        acc = r["scores"]["ceers"]["accuracy"]
        assert 0.0 <= acc <= 1.0 and r["scores"]["ceers"]["n"] == summary["test_n"]
    # a second call reuses every finished run: nothing is trained twice
    again = subprocess.run([sys.executable, str(ROOT / "tools" / "ceers_results.py"), "--quick",
                            "--work", str(tmp_path / "work"), "--docs", str(docs),
                            "--data", str(data)], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((docs / "ceers_quick.json").read_text()) == results
