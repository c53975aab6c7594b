"""Analysis commands, registered as a default plugin: `similar`, `study bands|crops`, `rank`.

They live here rather than in core/cli.py so the kernel's CLI stays the short list of the
main pipeline; like every command they are thin clients of the public Python API
(`Run.similar`, `Run.band_study`, `astrotransfer.crop_study`, `astrotransfer.rank`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from astrotransfer.hookspecs import hookimpl

console = Console()

RunArg = Annotated[Path, typer.Argument(help="run directory written by `train`")]
DataOpt = Annotated[Path, typer.Option("--data", help="cutout store to apply the run to")]


def _fmt(v, digits: int = 4) -> str:
    return "—" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def similar(run: RunArg, data: DataOpt,
            object_id: Annotated[str, typer.Option("--id", help="object id of the query")],
            k: Annotated[int, typer.Option("-k", help="objects to show, the query included")] = 10,
            metric: Annotated[str, typer.Option(help="cosine | euclidean")] = "cosine",
            out: Annotated[Optional[Path], typer.Option(
                help="PNG path (default: RUN/similar/...)")] = None):
    """Nearest neighbours of one object in the run's feature space: table and image grid."""
    import astrotransfer as at

    res = at.load_run(run).similar(data, object_id, k, metric, out)
    table = Table("#", "object_id", "distance", "label", "predicted", "p_max",
                  title=f"{res['k']} nearest to {res['query']} ({metric})")
    for n in res["neighbours"]:
        table.add_row("query" if n["rank"] == 1 else str(n["rank"] - 1), n["object_id"],
                      f"{n['distance']:.4f}", n["label"] or "—", n["predicted"],
                      f"{n['p_max']:.3f}")
    console.print(table)
    console.print(f"[green]wrote[/] {res['png']} and {res['json']}")


def study_bands(run: RunArg, data: DataOpt,
                split: Annotated[str, typer.Option(help="test | val | train | all")] = "test",
                batch_size: Annotated[int, typer.Option(help="objects per chunk")] = 256):
    """Zero each band in turn at test time and report the accuracy drop per band."""
    import astrotransfer as at

    res = at.load_run(run).band_study(data, split, batch_size)
    table = Table("band zeroed", "accuracy", "drop",
                  title=f"baseline accuracy {res['baseline_accuracy']:.3f} (N = {res['n']})")
    for band, drop in sorted(res["drops"].items(), key=lambda kv: -kv[1]):
        table.add_row(band, f"{res['accuracy'][band]:.3f}", f"{drop:+.3f}")
    console.print(table)
    console.print(f"[green]wrote[/] {res['png']} and {res['json']}")


def _sizes(text: str) -> tuple[int, ...]:
    from astrotransfer.errors import UserError

    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UserError(f"--sizes '{text}' must be comma-separated pixel sizes, "
                        f"e.g. 25,50,100") from None


def study_crops(
    source: Annotated[Path, typer.Option("--source", help="labelled source store")],
    out: Annotated[Path, typer.Option("--out", help="study folder (reused to resume)")],
    target: Annotated[Optional[Path], typer.Option("--target", help="target store")] = None,
    sizes: Annotated[str, typer.Option(help="centre-crop sizes in px")] = "25,50,100",
    backbone: Annotated[Optional[str], typer.Option(help="timm model name")] = None,
    pretrained: Annotated[Optional[str], typer.Option(help="auto | none | PATH")] = None,
    adapt: Annotated[Optional[str], typer.Option(help="adaptation method")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="epochs per size")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="batch size")] = None,
    lr: Annotated[Optional[float], typer.Option(help="learning rate")] = None,
    seed: Annotated[Optional[int], typer.Option(help="random seed")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda")] = None,
):
    """Train and evaluate at several centre-crop sizes of the stored cutouts."""
    import astrotransfer as at

    opts = {k: v for k, v in dict(backbone=backbone, pretrained=pretrained, adapt=adapt,
                                  epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                                  device=device).items() if v is not None}
    res = at.crop_study(source, out, target, _sizes(sizes),
                        progress=lambda msg: console.print(msg), **opts)
    table = Table("crop (px)", "source test acc", "target test acc", "run",
                  title=f"crop study, scored on the {res['evaluated_on']}")
    for r in res["results"]:
        table.add_row(str(r["crop"]), _fmt((r["source_test"] or {}).get("accuracy"), 3),
                      _fmt((r["target_test"] or {}).get("accuracy"), 3), r["run"])
    console.print(table)
    console.print(f"[green]wrote[/] {res['png']} and {res['json']}")


def rank(runs: Annotated[list[Path], typer.Argument(help="run directories to compare")],
         target: Annotated[Path, typer.Option("--target", help="target store (labels unused)")],
         source: Annotated[Optional[Path], typer.Option(
             "--source", help="source store (default: each run's own)")] = None,
         score: Annotated[str, typer.Option(help="dev | entropy | im | mmd")] = "dev",
         split: Annotated[str, typer.Option(help="target split to score")] = "all",
         max_objects: Annotated[int, typer.Option(help="objects per domain")] = 2000,
         out: Annotated[Optional[Path], typer.Option(help="write the ranking as JSON")] = None,
         as_json: Annotated[bool, typer.Option("--json", help="print JSON, not a table")] = False):
    """Rank runs by a label-free score on a target survey (lower is better)."""
    import astrotransfer as at

    res = at.rank(runs, target, score, source, split, max_objects, out=out)
    if as_json:
        print(json.dumps(res, indent=2))
        return
    table = Table("rank", "run", score, *[s for s in ("dev", "entropy", "im", "mmd") if s != score],
                  "target acc*", title=f"runs ranked by {score} on {target} (lower is better)")
    for r in res["runs"]:
        others = [_fmt(r.get(s)) for s in ("dev", "entropy", "im", "mmd") if s != score]
        table.add_row(str(r["rank"]), r["run"], _fmt(r[score]), *others,
                      _fmt(r.get("target_accuracy"), 3))
    console.print(table)
    console.print("* target accuracy is shown for reference where labels exist; "
                  "the ranking never uses it")
    if out:
        console.print(f"[green]wrote[/] {out}")


@hookimpl
def register_commands(app):
    app.command("similar")(similar)
    app.command("rank")(rank)
    # Other plugins may add their own studies to the same `study` group; join it if one
    # registered first, so `astrotransfer study --help` lists every study together.
    study = next((g.typer_instance for g in app.registered_groups
                  if g.name == "study" and g.typer_instance is not None), None)
    if study is None:
        study = typer.Typer(help="Studies: band ablation, crop sizes, and more.",
                            no_args_is_help=True)
        app.add_typer(study, name="study")
    study.command("bands")(study_bands)
    study.command("crops")(study_crops)
