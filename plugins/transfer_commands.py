"""Transfer-learning commands, registered as a default plugin: `study few-shot`.

The `study` group belongs to the analysis plugin; this module adds its subcommand to that
group when it exists (so `astrotransfer study --help` lists every study together) and
creates the group itself otherwise, so either plugin works without the other.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from astrotransfer.hookspecs import hookimpl


def study_few_shot(
    source: Annotated[Path, typer.Option("--source", help="labelled source store")],
    target: Annotated[Path, typer.Option("--target", help="target store with labels")],
    out: Annotated[Path, typer.Option("--out", help="study folder (reused to resume)")],
    n: Annotated[str, typer.Option("--n", help="labelled target counts")] = "0,50,100,300,500",
    epochs: Annotated[Optional[int], typer.Option(help="epochs per run [5]")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="timm model name")] = None,
    pretrained: Annotated[Optional[str], typer.Option(help="auto | none | PATH")] = None,
    adapt: Annotated[Optional[str], typer.Option(help="adaptation method [finetune]")] = None,
    stages: Annotated[Optional[str], typer.Option(help="progressive unfreezing, as for train")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="batch size")] = None,
    lr: Annotated[Optional[float], typer.Option(help="learning rate")] = None,
    seed: Annotated[Optional[int], typer.Option(help="first random seed")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="seeds per N (mean ± std) [1]")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML file of train options")] = None,
):
    """Target test accuracy against N labelled target objects: table, PNG and JSON."""
    from astrotransfer.cli import console
    from astrotransfer.config import load_config
    from astrotransfer.engine.analysis.few_shot import few_shot_study, few_shot_table, parse_ns

    ns = parse_ns(n)
    overrides = dict(source=str(source), target=str(target), out=str(out), epochs=epochs,
                     backbone=backbone, pretrained=pretrained, adapt=adapt, stages=stages,
                     batch_size=batch_size, lr=lr, seed=seed, seeds=seeds, device=device)
    result = few_shot_study(load_config(config, overrides), ns, out)
    console.print(few_shot_table(result))
    console.print(f"table, plot and JSON in {out}/few_shot.md, few_shot.png, few_shot.json")


@hookimpl
def register_commands(app):
    for group in app.registered_groups:
        if group.name == "study" and group.typer_instance is not None:
            group.typer_instance.command("few-shot")(study_few_shot)
            return
    study = typer.Typer(help="Studies.", no_args_is_help=True)
    study.command("few-shot")(study_few_shot)
    app.add_typer(study, name="study")
