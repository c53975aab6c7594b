"""Defaults that change what a run means are said out loud on stderr, through the real CLI.

One tiny training run covers both: its target store (sim DES: g,r,i,z) has a band the source
(sim SDSS: g,r,i) lacks, so the run must say which mapping it chose; and `--pretrained auto`
for a backbone with no weights reachable offline must warn that it fell back to random
weights, naming every source it tried.
"""
from __future__ import annotations

import json

from conftest import TINY_BACKBONE, run_cli


def test_band_mapping_and_random_weight_fallback_are_announced(sim_pair, tmp_path):
    src, tgt = sim_pair
    out = tmp_path / "run"
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),  # an empty HF cache
           "ASTROTRANSFER_WEIGHTS": str(tmp_path / "weights")}
    proc = run_cli("train", "--source", src, "--target", tgt, "--out", out, "--adapt", "mmd",
                   "--backbone", TINY_BACKBONE, "--pretrained", "auto", "--epochs", "1",
                   "--batch-size", "16", "--device", "cpu", env=env)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.splitlines()

    mapping = [ln for ln in err if ln.startswith("band mapping for")]
    assert mapping, proc.stderr
    assert str(tgt) in mapping[0]
    assert "using its bands g,r,i for the model's g,r,i" in mapping[0]
    assert "dropping z" in mapping[0]

    fallback = [ln for ln in err if ln.startswith("no pretrained weights")]
    assert len(fallback) == 1, proc.stderr
    line = fallback[0]
    assert f"backbone '{TINY_BACKBONE}'" in line and "random init" in line
    for source in ("hf-hub:", "HF_HUB_OFFLINE", "local cache:", str(tmp_path / "weights"),
                   "offline sources:"):
        assert source in line, (source, line)
    # the run records the same provenance, so a reader of the run directory sees it too
    info = json.loads((out / "run.json").read_text())
    assert info["pretrained"].startswith("random init (no pretrained weights: tried hf-hub")
