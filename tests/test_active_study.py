"""tools/active_results.py --quick on real data: a GZ1 source run (tiny backbone, one
epoch, small ingest) and real JWST CEERS stamps as the new survey, labels as the oracle."""
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
                           "--run", str(tmp_path / "run"), "--data", str(tmp_path / "ceers.zarr"),
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    page = out.read_text()
    assert "QUICK smoke run" in page and "| 100 |" in page
    res = json.loads(out.with_suffix(".json").read_text())
    assert set(res["curves"]) == {"random", "uncertainty", "margin", "diversity", "hybrid"}
    assert all(len(c) == 2 and len(c[0]) == len(res["grid"]) for c in res["curves"].values())
    assert 0.0 <= res["zero_shot"] <= 1.0 and out.with_suffix(".png").stat().st_size > 5000
