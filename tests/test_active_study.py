"""tools/active_results.py --quick on real data: a GZ1 source run (tiny backbone, one
epoch, small ingest) and real JWST CEERS stamps as the new survey, labels as the oracle;
two feature candidates (plain and TTA) chosen between on the pool; and the simulated pair
(sim SDSS run → sim DES store) built by the tool itself."""
from __future__ import annotations

import json
import sys

import pytest

from conftest import ROOT, TINY_BACKBONE, run_cli, shared_data

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def subset(src, dst, n):
    dst.write_text("\n".join(src.read_text().splitlines()[: n + 1]) + "\n")
    return dst


def test_quick_study_on_real_ceers(tmp_path):
    import subprocess

    gz1, ceers = shared_data("gz1_sdss"), shared_data("jwst_ceers")
    run_cli("ingest", "images", "--images", gz1 / "images", "--catalog",
            subset(gz1 / "labels.csv", tmp_path / "gz1.csv", 300), "--id-column", "objid",
            "--label-column", "gz1_class", "--label-map",
            "0=elliptical,1=spiral,2=spiral,3=spiral", "--drop-unmapped", "--crop", 212,
            "--size", 32, "--survey-name", "sdss-gz1", "--out", tmp_path / "gz1.zarr", check=True)
    run_cli("ingest", "images", "--images", ceers / "images", "--catalog",
            subset(ceers / "labels.csv", tmp_path / "ceers.csv", 500), "--id-column", "id",
            "--label-column", "label", "--label-map", "smooth=elliptical,featured=spiral",
            "--drop-unmapped", "--size", 32, "--survey-name", "jwst_ceers",
            "--out", tmp_path / "ceers.zarr", check=True)
    run_cli("train", "--source", tmp_path / "gz1.zarr", "--out", tmp_path / "run",
            "--backbone", TINY_BACKBONE, "--pretrained", "none", "--epochs", 1,
            "--band-policy", "mean", check=True)
    out = tmp_path / "active" / "active.md"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "active_results.py"), "--quick",
                           "--run", str(tmp_path / "run"), "--features",
                           f"run_tta2={tmp_path / 'run'}:2", "--data", str(tmp_path / "ceers.zarr"),
                           "--sim", "--work", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    page = out.read_text()
    assert "QUICK smoke run" in page and "| 100 |" in page
    assert "Real: GZ1 (SDSS) → JWST CEERS" in page and "Simulated pair" in page
    assert page.count("**Answer (balanced accuracy):**") == 2
    res = json.loads(out.with_suffix(".json").read_text())
    strategies = {"random", "uncertainty", "diversity", "hybrid", "badge", "density"}
    for st in res["studies"].values():
        for metric in ("bal_acc", "acc"):
            assert set(st["curves"][metric]) == strategies
            assert all(len(c) == 2 and len(c[0]) == len(st["grid"])
                       for c in st["curves"][metric].values())
            assert 0.0 <= st["floor"][metric] <= 1.0 and 0.0 <= st["ceiling"][metric] <= 1.0
    ceers = res["studies"]["ceers"]
    assert set(ceers["features"]) == {"run", "run_tta2"}
    cv = {n: f["cv_best"] for n, f in ceers["features"].items()}
    assert ceers["chosen"] == max(cv, key=cv.get)  # chosen on the pool, by its CV score
    assert out.with_suffix(".png").stat().st_size > 5000
