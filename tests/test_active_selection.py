"""Selection strategies (a registered plugin kind) and `astrotransfer select`.

The strategies are checked on arrays whose right answer is known (blobs, probabilities);
the command on a real store with a real (tiny) run.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from astrotransfer.engine.active.selection import choose
from astrotransfer.errors import UserError
from astrotransfer.label_store import LabelSession
from astrotransfer.registry import get_registry
from astrotransfer.selector import Pool, Selector
from conftest import run_cli, tiny_run_copy


def blobs(k=4, per=30, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (k, 16)) * 10
    feats = np.concatenate([c + rng.normal(0, 0.1, (per, 16)) for c in centers])
    return feats, np.repeat(np.arange(k), per)


def test_builtins_are_registered_through_the_hook():
    names = get_registry().names("selector")
    assert {"random", "uncertainty", "margin", "diversity", "hybrid", "balanced", "badge",
            "density"} <= set(names)
    for name in names:
        assert get_registry().get("selector", name).description


def test_a_third_party_selector_registers_like_builtins():
    from astrotransfer.hookspecs import hookimpl
    from astrotransfer.registry import _collect, build_registry

    class First(Selector):
        name, description = "first", "store order"

        def select(self, pool, n, rng):
            return np.arange(min(n, len(pool)))

    class Plugin:
        @hookimpl
        def register_selectors(register):
            register(First())

    reg = build_registry()
    reg.pm.register(Plugin, name="thirdparty")
    _collect(reg, "selector")
    assert reg.get("selector", "first").select(Pool(np.ones((5, 2)) / 2, np.zeros((5, 3))), 3,
                                               None).tolist() == [0, 1, 2]
    assert reg.entries["selector"]["first"].plugin == "thirdparty"


def test_uncertainty_and_margin_take_the_least_sure():
    probs = np.array([[0.99, 0.01], [0.5, 0.5], [0.8, 0.2], [0.55, 0.45], [0.9, 0.1]])
    pool = Pool(probs, np.zeros((5, 2)))
    for name in ("uncertainty", "margin"):
        assert choose(name, pool, 2).tolist() == [1, 3]


def test_diversity_covers_every_blob_first():
    feats, blob = blobs()
    picks = choose("diversity", Pool(np.full((len(feats), 2), 0.5), feats), 4, seed=3)
    assert sorted(blob[picks]) == [0, 1, 2, 3]
    # around labelled objects of blobs 0 and 1, the next two come from blobs 2 and 3
    lab = feats[[0, 30]]
    picks = choose("diversity", Pool(np.full((len(feats), 2), 0.5), feats, lab, np.array([0, 1])), 2)
    assert sorted(blob[picks]) == [2, 3]


def test_hybrid_is_uncertain_and_spread():
    feats, blob = blobs()
    probs = np.tile([0.95, 0.05], (len(feats), 1))
    probs[blob >= 2] = [0.5, 0.5]  # blobs 2 and 3 are the uncertain ones
    probs[blob >= 2] += np.random.default_rng(0).normal(0, 0.01, (60, 1)) * [1, -1]
    picks = choose("hybrid", Pool(probs, feats), 2, seed=1)
    assert sorted(blob[picks]) == [2, 3]          # one per uncertain blob, not two of one
    only_uncertainty = choose("uncertainty", Pool(probs, feats), 2)
    assert set(blob[only_uncertainty]) <= {2, 3}


def test_badge_is_uncertain_and_spread():
    """BADGE's two properties on a continuum with a linear boundary (the head's view): its
    picks are far less sure than the pool, and far more spread than uncertainty's."""
    from scipy.spatial.distance import pdist

    from astrotransfer.plugins.selectors import entropy

    rng = np.random.default_rng(0)
    feats = rng.normal(0, 1, (1000, 16))
    p1 = 1 / (1 + np.exp(-4 * feats[:, 0]))  # the boundary: feature 0 = 0
    probs = np.stack([1 - p1, p1], 1)
    badge = choose("badge", Pool(probs, feats), 20, seed=1)
    unc = choose("uncertainty", Pool(probs, feats), 20)
    assert entropy(probs[badge]).mean() > 1.7 * entropy(probs).mean()  # measured: 1.9x
    # spread along the boundary (features 1..15): measured 5.75 against 5.01
    assert pdist(feats[badge][:, 1:]).mean() > 1.1 * pdist(feats[unc][:, 1:]).mean()
    assert badge.tolist() == choose("badge", Pool(probs, feats), 20, seed=1).tolist()


def test_density_prefers_typical_uncertain_objects_to_outliers():
    feats, blob = blobs(k=2, per=40)
    rng = np.random.default_rng(5)
    outliers = rng.normal(0, 1, (4, 16)) * 40  # four isolated oddities, each far from all
    feats = np.concatenate([feats, outliers])
    probs = np.tile([0.9, 0.1], (len(feats), 1))
    probs[40:80] = [0.6, 0.4]     # blob 1: unsure
    probs[80:] = [0.5, 0.5]       # the outliers: the most unsure of all
    plain = choose("uncertainty", Pool(probs, feats), 4)
    assert set(plain.tolist()) == {80, 81, 82, 83}
    dense = choose("density", Pool(probs, feats), 4, seed=0)
    assert all(40 <= i < 80 for i in dense.tolist())


def test_balanced_seeding_gives_each_predicted_class_its_share():
    feats, blob = blobs(k=2, per=50)
    probs = np.zeros((100, 2))
    probs[:90, 0], probs[90:, 1] = 0.9, 0.9  # a rare predicted class of 10
    probs[:90, 1], probs[90:, 0] = 0.1, 0.1
    picks = choose("balanced", Pool(probs, feats), 10, seed=0)
    assert len(set(picks.tolist())) == 10
    assert (probs[picks].argmax(1) == 1).sum() == 5


def test_random_is_reproducible_and_distinct():
    pool = Pool(np.full((50, 2), 0.5), np.zeros((50, 3)))
    a, b = choose("random", pool, 20, seed=7), choose("random", pool, 20, seed=7)
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 20


def test_a_broken_strategy_is_caught():
    class Dup(Selector):
        name = "dup"

        def select(self, pool, n, rng):
            return np.zeros(n, dtype=int)

    get_registry().entries["selector"]["dup"] = type(
        get_registry().entries["selector"]["random"])("dup", "selector", Dup(), "t", "t", "0")
    try:
        with pytest.raises(UserError, match="invalid positions"):
            choose("dup", Pool(np.full((5, 2), 0.5), np.zeros((5, 2))), 3)
    finally:
        del get_registry().entries["selector"]["dup"]


def test_select_command_writes_a_queue_and_skips_answered_objects(label_store, tiny_run_master,
                                                                  tmp_path):
    run = tiny_run_copy(tiny_run_master, tmp_path / "run")
    session = LabelSession.create(label_store, ["elliptical", "spiral"], "first")
    with session.writing():
        for row in range(10):
            session.append(row, row % 2)
    out = tmp_path / "queue.json"
    proc = run_cli("select", run, "--data", label_store, "--n", 15, "--strategy", "hybrid",
                   "--out", out, check=True)
    assert "queued 15 objects" in proc.stdout
    q = json.loads(out.read_text())
    assert len(set(q["rows"])) == 15 and not set(q["rows"]) & set(range(10))
    assert q["strategy"] == "hybrid" and q["run"] == str(run.resolve())
    assert len(q["entropy"]) == 15
    bad = run_cli("select", run, "--data", label_store, "--n", 5, "--strategy", "cleverest",
                  "--out", out)
    assert bad.returncode == 1 and "unknown selector 'cleverest'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
