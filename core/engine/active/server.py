"""The label page's web server: Flask routes over a `LabelDesk`, on 127.0.0.1 by default.

Why Flask and werkzeug's threaded server: a labelling page serves one person on one
machine, so a small synchronous framework is enough, starts in milliseconds and needs no
event loop; every answer is committed to the store before its HTTP reply is sent, so a page
that showed the next object has saved the previous one. The page (`page.py`) is one HTML
document with inline CSS and JavaScript: nothing is fetched from the internet.
"""
from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path
from typing import Callable

from ...errors import UserError
from .desk import LabelDesk
from .page import PAGE

log = logging.getLogger("astrotransfer")


class _Slot:
    """The desk the routes serve; empty while the desk is still being built after the port
    was bound (so a port in use fails before any work, and any session is created)."""

    def __init__(self, desk: LabelDesk | None = None):
        self.desk = desk


def build_app(slot: "_Slot | LabelDesk"):
    """The Flask application for one desk (routes: /, /api/state, /api/answer, /api/undo,
    /api/requeue, /img/<row>.png)."""
    from flask import Flask, Response, jsonify, request

    slot = slot if isinstance(slot, _Slot) else _Slot(slot)
    app = Flask("astrotransfer.label")
    app.logger.disabled = True

    class _Desk:  # the routes' view of the slot's desk
        def __getattr__(self, name):
            return getattr(slot.desk, name)

    desk = _Desk()

    @app.before_request
    def starting():
        if slot.desk is None:
            return jsonify({"error": "the labelling desk is still starting; retry"}), 503

    def fail(exc: Exception, status: int = 400):
        return jsonify({"error": " ".join(str(exc).split())}), status

    @app.get("/")
    def page():
        return Response(PAGE, mimetype="text/html")

    @app.get("/api/state")
    def state():
        return jsonify(desk.state())

    @app.post("/api/answer")
    def answer():
        body = request.get_json(silent=True) or {}
        try:
            desk.answer(int(body.get("row", -1)), str(body.get("answer", "")))
        except UserError as exc:
            return fail(exc, 409 if "not the one being shown" in str(exc) else 400)
        return jsonify(desk.state())

    @app.post("/api/undo")
    def undo():
        desk.undo()
        return jsonify(desk.state())

    @app.post("/api/requeue")
    def requeue():
        if not desk.state()["can_retrain"]:
            return fail(UserError("retraining needs a run: start the page with --run RUN"))
        try:
            with desk.lock:
                event = desk.requeue()
        except UserError as exc:
            return fail(exc)
        return jsonify({**desk.state(), "event": event})

    @app.get("/img/<int:row>.png")
    def image(row: int):
        try:
            soft = float(request.args.get("a", 0.1))
            png = desk.image(row, request.args.get("view", "auto"), min(max(soft, 1e-3), 1.0))
        except (UserError, ValueError) as exc:
            return fail(exc, 404)
        return Response(png, mimetype="image/png", headers={"Cache-Control": "max-age=3600"})

    return app


def make_server(app, host: str, port: int):
    """Bind (refusing a port in use with one line naming the fix), then hand the bound
    socket to werkzeug: its own bind error path prints to stderr and exits the process."""
    import socket

    from werkzeug.serving import make_server as wz_make_server

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart after a kill at once
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise UserError(f"port {port} on {host} is "
                            f"{'in use' if exc.errno == errno.EADDRINUSE else 'not allowed'}; "
                            f"pass another --port (0 picks a free one)") from None
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); check --host "
                        f"and --port") from None
    try:
        return wz_make_server(host, sock.getsockname()[1], app, threaded=True,
                              fd=sock.fileno())
    finally:
        sock.close()  # werkzeug holds its own duplicate of the descriptor


def serve(open_desk_fn: Callable[[], LabelDesk], host: str = "127.0.0.1", port: int = 8765,
          ready: Callable[[str], None] | None = None) -> None:
    """Bind the port, build the desk, then serve the page until interrupted, holding the
    session's write lock throughout.

    The port is bound first so that a port in use is refused before the run is applied or a
    session is created.
    """
    slot = _Slot()
    server = make_server(build_app(slot), host, port)
    try:
        slot.desk = open_desk_fn()
        with slot.desk.session.writing():
            if ready is not None:
                ready(f"http://{host}:{server.socket.getsockname()[1]}/")
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
    finally:
        server.server_close()


def open_desk(store: Path, run: Path | None = None, classes: list[str] | None = None,
              keys: str | list[str] | None = None, queue: Path | None = None,
              session: str | None = None, who: str | None = None, strategy: str = "hybrid",
              batch: int = 50, split: str = "all", tta: int = 1, seed: int = 0) -> LabelDesk:
    """Check every input, open (or create) the session and build the desk."""
    from ...label_store import LabelSession
    from ...registry import get_registry
    from ...store import CutoutStore
    from ..runs import RunDir
    from .desk import resolve_classes, resolve_keys

    st = CutoutStore.open(store)
    if st.n == 0 or "images" not in st.group or st.images.shape[0] < st.n:
        raise UserError(f"store {store} has no images to label (0 committed objects); ingest "
                        f"cutouts into it first")
    get_registry().get("selector", strategy)
    if batch < 1:
        raise UserError(f"--batch must be at least 1, got {batch}")
    run_classes = list(RunDir(Path(run)).info()["class_names"]) if run is not None else None
    classes = resolve_classes(st, run_classes, classes, run)
    keys = resolve_keys(classes, keys)
    if session is not None and (Path(store) / "labels" / session / "zarr.json").exists():
        sess = LabelSession.open(store, session, mode="a")
        if sorted(sess.classes) != sorted(classes):
            raise UserError(f"session '{session}' in {store} labels classes "
                            f"{','.join(sess.classes)}, not {','.join(classes)}; pass its "
                            f"classes or start a new --session")
        created = False
    else:
        sess = LabelSession.create(store, classes, session, who,
                                   strategy if run is not None else "manual",
                                   None if run is None else str(Path(run).resolve()))
        created = True
    try:
        return LabelDesk(Path(store), classes, keys, sess, None if run is None else Path(run),
                         queue, strategy, batch, split, tta, seed)
    except BaseException:
        if created and sess.n == 0:  # bad input found later (queue, run): no empty session
            shutil.rmtree(Path(store) / "labels" / sess.name, ignore_errors=True)
        raise
