"""The GZ1 -> JWST CEERS transfer study (tools/ceers_results.py) in its quick mode, on the
real shared data: every stage of the study runs end to end through the public API, the page
it writes holds the tables, the plots, the test split's size, and its "new user's commands"
run as written through the CLI. The numbers of the quick mode mean nothing (tiny sizes; the
page says so): the full study's page is docs/results/ceers.md. Both run on a small copy of the
real data tree (the first catalog rows, images linked), so the suite stays within budget."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import mini_shared_data

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _study(work: Path, docs: Path, data: Path, timeout: int):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "ceers_results.py"), "--quick",
                           "--work", str(work), "--docs", str(docs), "--data", str(data)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    base = tmp_path_factory.mktemp("ceers_quick")
    data = mini_shared_data(base / "shared")
    res = _study(base / "work", base / "docs", data, 1500)
    assert res.returncode == 0, res.stderr[-3000:]
    return base, data


def test_quick_study_page_tables_plots_and_numbers(quick_study):
    base, data = quick_study
    docs = base / "docs"
    page = (docs / "ceers_quick.md").read_text()
    assert "QUICK SMOKE RUN" in page
    for section in ("## (a), (b), (d)", "## (c) few-shot", "## (e) label-free model selection",
                    "## A new user's commands", "**Answer:**", "beyond two standard errors"):
        assert section in page, section
    for png in ("ceers_few_shot_quick.png", "ceers_methods_quick.png", "ceers_tsne_quick.png"):
        assert (docs / png).stat().st_size > 10_000, png
    summary = json.loads((docs / "ceers_quick_summary.json").read_text())
    assert summary["test_n"] > 100 and 0 < summary["hp_test_n"] < summary["test_n"]
    assert f"Test split: {summary['test_n']} CEERS objects" in page
    results = json.loads((docs / "ceers_quick.json").read_text())
    kinds = {r["key"][0] for r in results}
    assert {"zero-shot", "mmd", "recursive", "few-shot imagenet", "few-shot gz1",
            "few-shot adapted"} <= kinds
    for r in results:
        assert 0.0 <= r["scores"]["ceers"]["accuracy"] <= 1.0
        assert r["scores"]["ceers"]["n"] == summary["test_n"]
    # a second call reuses every finished run: nothing is trained twice, same numbers
    again = _study(base / "work", docs, data, 600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((docs / "ceers_quick.json").read_text()) == results


def test_the_pages_commands_run_as_written(quick_study, tmp_path):
    """The bash block a new user copies, run verbatim by bash in a folder whose ../shared/data
    is the real data (the page's own relative path)."""
    base, data = quick_study
    page = (base / "docs" / "ceers_quick.md").read_text()
    script = re.search(r"```bash\n(.*?)```", page, re.S).group(1)
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "shared").symlink_to(data.parent, target_is_directory=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=project, env=env,
                         capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-3000:])
    for store in ("gz1", "ceers", "ceers_hp", "pool"):
        assert (project / f"{store}.zarr" / "zarr.json").exists()
    assert (project / "runs" / "zero_shot" / "seed_0" / "best.pt").exists()
    assert (project / "runs" / "fs_gz1_n25" / "best.pt").exists()
    assert "weights of run runs/zero_shot/seed_0" in (
        project / "runs" / "fs_gz1_n25" / "run.json").read_text()
