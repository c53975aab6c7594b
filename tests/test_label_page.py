"""The label server as a real process: answers over HTTP are in the store the moment they
are acknowledged, a `kill -9` mid-session loses nothing acknowledged, and bad input gives
one-line errors with nothing half-written."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from astrotransfer.api import label_page
from astrotransfer.errors import UserError
from astrotransfer.label_store import LabelSession, list_sessions
from astrotransfer.store import CutoutStore
from conftest import error_lines, run_cli, start_label_server, tiny_run_copy


def call(url: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(url.rstrip("/") + path, method="GET" if body is None else "POST",
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_kill_9_mid_session_loses_nothing_acknowledged(label_store):
    proc, url = start_label_server(label_store, "--session", "night", "--classes",
                                   "elliptical,spiral", "--keys", "e,s")
    acked: dict[int, int] = {}
    try:
        state = call(url, "/api/state")
        assert state["classes"] == ["elliptical", "spiral"] and state["keys"] == ["e", "s"]
        assert url.startswith("http://127.0.0.1:")
        # an unknown class key is refused with one line, and nothing is written
        with pytest.raises(urllib.error.HTTPError) as err:
            call(url, "/api/answer", {"row": state["current"]["row"], "answer": "x"})
        assert err.value.code == 400
        assert "unknown class or key 'x'" in json.loads(err.value.read())["error"]
        png = urllib.request.urlopen(f"{url}img/{state['current']['row']}.png?view=rgb").read()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        # answer as fast as possible; kill -9 the server while answers are in flight
        killer = None
        while True:
            row = state["current"]["row"]
            answer = ["e", "s", "spiral"][len(acked) % 3]
            try:
                state = call(url, "/api/answer", {"row": row, "answer": answer})
            except (urllib.error.URLError, OSError, http.client.HTTPException):
                break
            acked[row] = 0 if answer == "e" else 1
            if len(acked) == 10 and killer is None:
                killer = threading.Timer(0.05, os.kill, (proc.pid, signal.SIGKILL))
                killer.start()
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    stored = LabelSession.open(label_store, "night").current()
    assert len(acked) >= 10
    assert {r: stored[r] for r in acked} == acked          # nothing acknowledged is lost
    assert len(set(stored) - set(acked)) <= 1              # at most the click in flight
    # the kernel released the lock: the same session opens again and goes on where it was
    proc, url = start_label_server(label_store, "--session", "night", "--classes",
                                   "elliptical,spiral", "--keys", "e,s")
    try:
        state = call(url, "/api/state")
        assert state["current"]["row"] not in stored
        assert state["counts"]["elliptical"] + state["counts"]["spiral"] == len(stored)
        state = call(url, "/api/answer", {"row": state["current"]["row"], "answer": "e"})
        state = call(url, "/api/undo", {})
        assert len(LabelSession.open(label_store, "night").current()) == len(stored)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert CutoutStore.open(label_store).n == 96  # the store itself is intact


def _one_line(fn):
    with pytest.raises(UserError) as err:
        fn()
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_bad_input_is_one_line_and_writes_nothing(label_store, tiny_run_master, tmp_path):
    run = tiny_run_copy(tiny_run_master, tmp_path / "run")
    kw = dict(port=0, ready=lambda url: pytest.fail("must not start"))
    # unknown / unusable class keys
    assert "'u' is not a usable class key" in _one_line(
        lambda: label_page(label_store, keys="1,u", **kw))
    assert "2 distinct keys for 3 classes" in _one_line(
        lambda: label_page(label_store, classes="a,b,c", keys="1,2", **kw))
    # a run whose classes differ from --classes
    msg = _one_line(lambda: label_page(label_store, run=run, classes="star,galaxy", **kw))
    assert "trained on classes elliptical,spiral but --classes gives star,galaxy" in msg
    # a store without images: an empty store, and a folder that is no store
    empty = CutoutStore.create(tmp_path / "empty.zarr", {"survey": "x", "bands": ["g"],
                               "pixel_scale": 1.0, "class_names": []}, (1, 8, 8))
    assert "has no images to label" in _one_line(lambda: label_page(empty.path, **kw))
    (tmp_path / "notastore").mkdir()
    assert "is not" in _one_line(lambda: label_page(tmp_path / "notastore", **kw))
    # a queue of another store
    (tmp_path / "q.json").write_text(json.dumps({"rows": [0], "object_ids": ["nope"]}))
    assert "does not belong to store" in _one_line(
        lambda: label_page(label_store, queue=tmp_path / "q.json", **kw))
    assert list_sessions(label_store) == []  # nothing half-written by any of them


def test_port_in_use_is_one_line_from_the_command(label_store):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        proc = run_cli("label", label_store, "--port", port)
    assert proc.returncode == 1
    lines = error_lines(proc.stderr)
    assert lines == [f"error: port {port} on 127.0.0.1 is in use; pass another --port (0 "
                     f"picks a free one)"], proc.stderr
    assert "Traceback" not in proc.stderr and list_sessions(label_store) == []


def test_retrain_requeues_by_the_strategy(label_store, tiny_run_master, tmp_path):
    """The desk in-process: balanced first batch, answers, head refit, next batch."""
    from astrotransfer.engine.active.server import open_desk

    run = tiny_run_copy(tiny_run_master, tmp_path / "run")
    desk = open_desk(label_store, run=run, batch=6, strategy="diversity")
    assert len(desk.queue) == 6 and set(desk.how.values()) == {"balanced"}
    truth = CutoutStore.open(label_store).column("label")
    with desk.session.writing():
        while desk.pending():
            row = desk.pending()[0]
            desk.answer(row, desk.classes[int(truth[row])])
        event = desk.requeue()
    assert event["strategy"] == "diversity" and event["queued"] == 6
    assert event["head_refit"] == (len(set(truth[desk.queue[:6]].tolist())) == 2)
    assert len(desk.pending()) == 6 and not set(desk.pending()) & set(desk.queue[:6])
    assert desk.session.attrs["events"][-1]["strategy"] == "diversity"
    assert np.array_equal(CutoutStore.open(label_store).column("label"), truth)
