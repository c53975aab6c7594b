"""Real SDSS Galaxy Zoo 1 images: ImageNet-pretrained fine-tuning must clearly beat scratch.

This is the seed papers' core claim on real pixels (Khan et al. 2019; Domínguez Sánchez et
al. 2019), at 96 px with the default `tf_efficientnet_lite0`. To keep CI within budget it
uses the first 1,500 catalog rows (elliptical vs spiral); `tools/gz1_pretrained_vs_scratch.py`
runs the same comparison on all of them.
"""
from __future__ import annotations

import json

import pytest

from conftest import run_cli, shared_data

pytestmark = [pytest.mark.slow, pytest.mark.realdata]
N_ROWS, EPOCHS = 1500, 3


def test_pretrained_beats_scratch_on_gz1(tmp_path):
    gz1 = shared_data("gz1_sdss")
    rows = (gz1 / "labels.csv").read_text().splitlines()
    catalog = tmp_path / "labels_subset.csv"
    catalog.write_text("\n".join(rows[: N_ROWS + 1]) + "\n")
    store = tmp_path / "gz1.zarr"
    run_cli("ingest", "images", "--images", gz1 / "images", "--catalog", catalog,
            "--id-column", "objid", "--label-column", "gz1_class",
            "--label-map", "0=elliptical,1=spiral,2=spiral,3=spiral", "--drop-unmapped",
            "--crop", 212, "--size", 96, "--survey-name", "sdss-gz1", "--out", store, check=True)
    acc = {}
    for pretrained in ("auto", "none"):
        run = tmp_path / f"run_{pretrained}"
        run_cli("train", "--source", store, "--out", run, "--pretrained", pretrained,
                "--epochs", EPOCHS, "--image-size", 96, "--batch-size", 32, "--seed", 0,
                check=True)
        info = json.loads((run / "run.json").read_text())
        assert ("ImageNet" in info["pretrained"]) == (pretrained == "auto"), info["pretrained"]
        if pretrained == "auto":  # the zero-initialised head starts at chance, not at ~4.8
            first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
            assert first["train_loss"] < 0.7, first
        run_cli("evaluate", run, "--data", store, "--split", "test", check=True)
        acc[pretrained] = json.loads((run / "metrics.json").read_text())["accuracy"]
    print(f"GZ1 test accuracy: pretrained {acc['auto']:.3f}, scratch {acc['none']:.3f}")
    assert acc["auto"] > 0.8
    assert acc["auto"] >= acc["none"] + 0.05
