"""Labelling sessions in the store: append-only, crash-safe, provenance, never the survey's
own `label` column; and `train --target-labels-from` reading them."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import zarr

from astrotransfer.errors import UserError
from astrotransfer.label_store import (SKIP, UNSURE, LabelSession, answered_rows,
                                       collect_labels, list_sessions)
from astrotransfer.store import CutoutStore
from conftest import TINY_BACKBONE


def test_answers_undo_and_provenance(label_store):
    survey_labels = CutoutStore.open(label_store).column("label").copy()
    s = LabelSession.create(label_store, ["spiral", "elliptical"], "ann-1", who="ann",
                            strategy="hybrid", run="runs/x")
    with s.writing():
        s.append(5, 0, "hybrid")
        s.append(7, 1, "hybrid")
        s.append(9, SKIP, "hybrid")
        s.append(9, 3 - 6)  # UNDO retracts the skip of row 9
        s.append(11, UNSURE)
    again = LabelSession.open(label_store, "ann-1")
    assert again.n == 5 and again.current() == {5: 0, 7: 1, 11: UNSURE}
    assert again.attrs["who"] == "ann" and again.attrs["strategy"] == "hybrid"
    e = again.entries()[0]
    assert e.object_id == str(CutoutStore.open(label_store).column("object_id")[5])
    assert e.how == "hybrid" and e.time > 1.7e9
    # classes matched by name into the run's order; skip/unsure give no label
    rows, y = collect_labels(label_store, ["elliptical", "spiral"])
    assert rows.tolist() == [5, 7] and y.tolist() == [1, 0]
    assert answered_rows(label_store) == {5, 7, 11}
    # the survey's own labels are untouched
    assert np.array_equal(CutoutStore.open(label_store).column("label"), survey_labels)


def test_a_torn_entry_is_invisible(label_store):
    """A kill between writing an entry's values and bumping the count loses that entry only."""
    s = LabelSession.create(label_store, ["elliptical", "spiral"], "torn")
    with s.writing():
        s.append(3, 1)
    g = zarr.open_group(str(label_store / "labels" / "torn"), mode="a")
    g["row"][1:2] = np.array([42])  # values of a second entry, count never bumped
    g["label"][1:2] = np.array([0])
    s = LabelSession.open(label_store, "torn")
    assert s.n == 1 and s.current() == {3: 1}
    with s.writing():
        s.append(4, 0)  # the next append overwrites the torn slot
    assert LabelSession.open(label_store, "torn").current() == {3: 1, 4: 0}


def test_sessions_are_listed_oldest_first_and_later_answers_win(label_store):
    a = LabelSession.create(label_store, ["elliptical", "spiral"], "a")
    with a.writing():
        a.append(1, 0)
    b = LabelSession.create(label_store, ["elliptical", "spiral"], "b")
    b.group.attrs["created"] = "2999-01-01T00:00:00+00:00"
    with b.writing():
        b.append(1, 1)
    assert list_sessions(label_store) == ["a", "b"]
    assert collect_labels(label_store, ["elliptical", "spiral"])[1].tolist() == [1]


def test_bad_sessions_are_one_line_errors(label_store):
    LabelSession.create(label_store, ["elliptical", "spiral"], "s")
    with pytest.raises(UserError, match="already exists"):
        LabelSession.create(label_store, ["elliptical", "spiral"], "s")
    with pytest.raises(UserError, match="must be letters"):
        LabelSession.create(label_store, ["elliptical", "spiral"], "../evil")
    with pytest.raises(UserError, match="no labelling session 'nope'"):
        LabelSession.open(label_store, "nope")
    s = LabelSession.open(label_store, "s", mode="a")
    with pytest.raises(UserError, match="not a class"):
        s.append(0, 5)
    with s.writing(), pytest.raises(UserError, match="locked by another"):
        with LabelSession.open(label_store, "s", mode="a").writing():
            pass
    other = LabelSession.create(label_store, ["star", "galaxy"], "other")
    with other.writing():
        other.append(2, 0)
    with pytest.raises(UserError, match="star is not among"):
        collect_labels(label_store, ["elliptical", "spiral"])


def test_train_uses_the_session_labels(sim_pair, label_store, tmp_path, caplog):
    from astrotransfer.config import TrainConfig
    from astrotransfer.engine.training.dispatch import train

    s = LabelSession.create(label_store, ["elliptical", "spiral"], "campaign")
    truth = CutoutStore.open(label_store).column("label")
    with s.writing():
        for row in range(12):
            s.append(row, int(truth[row]))
        s.append(12, SKIP)
    cfg = dict(source=str(sim_pair[0]), target_labels_from=str(label_store),
               backbone=TINY_BACKBONE, pretrained="none", epochs=1, batch_size=16,
               device="cpu")
    with caplog.at_level(logging.INFO, logger="astrotransfer"):
        train(TrainConfig(out=str(tmp_path / "run"), **cfg))
    assert f"--target-labels-from: 12 labelled objects of {label_store}" in caplog.text
    with pytest.raises(UserError, match="cannot be combined"):
        train(TrainConfig(out=str(tmp_path / "run2"), target=str(label_store), target_labels=5,
                          **cfg))
