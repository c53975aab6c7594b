"""`astrotransfer ingest <survey>`: one subcommand per registered survey.

Each survey contributes its own options (`Survey.options`); the kernel adds the options
every ingest shares. The subcommand's signature is assembled at run time so that typer
renders survey options in `--help` exactly like hand-written ones.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from .survey import Option, Survey

COMMON = [
    Option("out", Path, ..., "the store to write (a zarr folder, e.g. gz1.zarr)"),
    Option("split_fractions", str, "0.8,0.1,0.1", "train,val,test fractions"),
    Option("split_seed", int, 0, "seed of the per-object split assignment"),
    Option("batch_size", int, 256, "objects per atomic commit"),
    Option("dtype", str, "auto", "stored pixel type: auto (JPEG stamps as their 8-bit "
           "pixels: half the disk, the same float32 on read; else float32), float32, "
           "float16, uint8"),
    Option("strict", bool, False, "fail on the first unusable object instead of skipping it"),
    Option("overwrite", bool, False, "replace an existing store"),
    Option("workers", int, None, "decode processes for surveys that allow it [one per core]; "
                                 "1 decodes in the ingest process"),
]


def _parameter(opt: Option) -> inspect.Parameter:
    flag = "--" + opt.name.replace("_", "-")
    if opt.type is bool:
        decl = typer.Option(f"{flag}/--no-{flag[2:]}", help=opt.help)
    else:
        decl = typer.Option(flag, help=opt.help)
    annotation = opt.type if opt.default is ... or opt.default is not None else Optional[opt.type]
    return inspect.Parameter(opt.name, inspect.Parameter.KEYWORD_ONLY,
                             default=opt.default, annotation=Annotated[annotation, decl])


def make_ingest_command(survey: Survey, console: Console):
    own = [o.name for o in survey.options]
    clash = set(own) & {o.name for o in COMMON}
    if clash:
        raise TypeError(f"survey {survey.name} redefines common ingest options {sorted(clash)}")

    def command(**kwargs: Any) -> None:
        from .api import ingest

        out = kwargs.pop("out")
        summary = ingest(survey.name, out, **kwargs).summary
        rate = summary.n_ingested / max(summary.seconds, 1e-9)
        console.print(f"[green]ingested[/] {summary.n_ingested} objects into {summary.out} "
                      f"({summary.seconds:.1f} s, {rate:.0f}/s); skipped {summary.n_skipped}"
                      + (f"; resumed after {summary.n_resumed} done" if summary.n_resumed else ""))
        console.print("  " + _contents(summary.out))
        for reason, count in sorted(summary.skip_reasons.items(), key=lambda kv: -kv[1]):
            console.print(f"  skipped {count:>6}  {reason}")
        if summary.n_skipped:
            console.print("  (each skipped object and its reason is listed in the store's "
                          "skipped/ arrays)")

    params = [_parameter(o) for o in survey.options + COMMON]
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = survey.description
    return command


def _contents(path: Path) -> str:
    """'bands grey; classes elliptical 120, spiral 40; unlabelled 0': what the store holds."""
    import numpy as np

    from .store import CutoutStore

    store = CutoutStore.open(path)
    labels = store.column("label")
    counts = np.bincount(labels[labels >= 0], minlength=len(store.class_names))
    classes = ", ".join(f"{n} {int(c)}" for n, c in zip(store.class_names, counts)) or "none"
    return (f"bands {','.join(store.bands)}; classes {classes}; "
            f"unlabelled {int((labels < 0).sum())}")


def build_ingest_app(surveys: list[Survey], console: Console) -> typer.Typer:
    app = typer.Typer(help="Ingest a survey's objects into a cutout store.",
                      no_args_is_help=True)
    for survey in surveys:
        app.command(survey.name, help=survey.description)(make_ingest_command(survey, console))
    return app
