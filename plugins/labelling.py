"""Labelling commands, registered as a default plugin: `select`, `label` and `labels`.

Thin clients of `astrotransfer.api.select`, `label_page` and `store_labels`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from astrotransfer.hookspecs import hookimpl


def select_cmd(
    run: Annotated[Path, typer.Argument(help="run whose probabilities and embeddings guide the choice")],
    data: Annotated[Path, typer.Option("--data", help="store to label")],
    out: Annotated[Path, typer.Option("--out", help="queue file to write (JSON)")],
    n: Annotated[int, typer.Option("--n", help="objects to queue")] = 50,
    strategy: Annotated[str, typer.Option(help="random | uncertainty | margin | diversity | hybrid | balanced (or a plugin's)")] = "hybrid",
    split: Annotated[str, typer.Option(help="candidates: all | train | val | test")] = "all",
    tta: Annotated[int, typer.Option(help="test-time augmentation views for the probabilities: 1, 2, 4, 8")] = 1,
    seed: Annotated[int, typer.Option(help="the strategy's random seed")] = 0,
):
    """Choose the objects most worth labelling next and write a queue for `label`."""
    from astrotransfer.api import select
    from astrotransfer.cli import console

    q = select(run, data, n, strategy, out, split, tta, seed)
    console.print(f"[green]queued[/] {len(q['rows'])} objects of {data} by {strategy} "
                  f"into {out}")


def label_cmd(
    data: Annotated[Path, typer.Argument(help="store to label")],
    run: Annotated[Optional[Path], typer.Option("--run", help="run for probabilities, embeddings and head-only retraining")] = None,
    classes: Annotated[Optional[str], typer.Option("--classes", help="answers, comma-separated [run's, else store's]")] = None,
    keys: Annotated[Optional[str], typer.Option("--keys", help="one key per class, comma-separated [1,2,...]")] = None,
    queue: Annotated[Optional[Path], typer.Option("--queue", help="queue file from `select`")] = None,
    session: Annotated[Optional[str], typer.Option("--session", help="session to continue or create [USER-TIME]")] = None,
    who: Annotated[Optional[str], typer.Option("--who", help="labeller's name recorded with the labels [login]")] = None,
    strategy: Annotated[str, typer.Option(help="re-queue strategy after each batch")] = "hybrid",
    batch: Annotated[int, typer.Option(help="objects per queued batch")] = 50,
    split: Annotated[str, typer.Option(help="candidates: all | train | val | test")] = "all",
    tta: Annotated[int, typer.Option(help="test-time augmentation views: 1, 2, 4, 8")] = 1,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0 picks a free one)")] = 8765,
):
    """Serve a local labelling page for a store; answers are saved in the store as clicked."""
    from astrotransfer.api import label_page
    from astrotransfer.cli import console

    def ready(url: str) -> None:
        console.print(f"labelling page at {url} (Ctrl-C to stop; every answer is already "
                      f"saved)", highlight=False)

    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/] listening on {host}: anyone who can reach it can "
                      f"label this store")
    label_page(data, run, classes, keys=keys, queue=queue, session=session, who=who,
               strategy=strategy, batch=batch, split=split, tta=tta, host=host, port=port,
               ready=ready)


def labels_cmd(data: Annotated[Path, typer.Argument(help="store")]):
    """The labelling sessions of a store: who, when, how chosen, how many labels."""
    from rich.table import Table

    from astrotransfer.api import store_labels
    from astrotransfer.cli import console

    res = store_labels(data)
    table = Table("session", "who", "created", "strategy", "entries", "labels")
    for s in res["sessions"]:
        table.add_row(s["name"], str(s["who"]), str(s["created"]), str(s["strategy"]),
                      str(s["n_entries"]), str(s["n_labels"]))
    console.print(table)
    console.print(f"{len(res['rows'])} objects labelled ({','.join(res['classes'])})")


@hookimpl
def register_commands(app):
    app.command("select")(select_cmd)
    app.command("label")(label_cmd)
    app.command("labels")(labels_cmd)
