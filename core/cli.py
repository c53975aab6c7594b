"""The `astrotransfer` command line.

Errors a user can fix (`UserError`, usage errors) print one line on stderr and exit
non-zero; any other exception does too, unless `--debug` asks for the traceback.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.table import Table

from . import __version__, interrupt
from .errors import UserError
from .registry import get_registry

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
app = typer.Typer(help="Transfer deep classifiers between astronomical surveys.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
plugins_app = typer.Typer(help="Inspect installed plugins.", no_args_is_help=True)
store_app = typer.Typer(help="Inspect and verify cutout stores.", no_args_is_help=True)
app.add_typer(plugins_app, name="plugins")
app.add_typer(store_app, name="store")

RunArg = Annotated[Path, typer.Argument(help="run directory written by `train`")]
DataOpt = Annotated[Path, typer.Option("--data", help="cutout store to apply the run to")]


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", help="print the version")] = False):
    if version:
        console.print(f"astrotransfer {__version__}")
        raise typer.Exit()


@plugins_app.command("list")
def plugins_list(as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False):
    """Every registered survey, backbone provider, adapter and trainer."""
    from .api import list_plugins

    entries = list_plugins()
    if as_json:
        print(json.dumps([{k: e[k] for k in ("name", "kind", "dist", "version")}
                          for e in entries], indent=2))
        return
    table = Table("kind", "name", "distribution", "version", "description")
    for e in entries:
        table.add_row(e["kind"], e["name"], e["dist"], e["version"], e["description"])
    console.print(table)


@store_app.command("check")
def store_check(store: Annotated[Path, typer.Argument(help="the store to verify")]):
    """Verify a store's integrity; exits non-zero with the reason if it is broken."""
    from .store import check_store

    report = check_store(store)
    console.print(f"[green]ok[/] {report['path']}: {report['n']} objects "
                  f"({report['unique_ids']} unique ids, {report['labelled']} labelled), "
                  f"splits {report['splits']}, bands {','.join(report['bands'])}, "
                  f"shape {report['image_shape']}, skipped {report['n_skipped']}")


@app.command()
def train(
    source: Annotated[Path, typer.Option("--source", help="labelled source store")],
    out: Annotated[Path, typer.Option("--out", help="run directory to create")],
    target: Annotated[Optional[Path], typer.Option("--target", help="unlabelled target store")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="timm model name [tf_efficientnet_lite0]")] = None,
    pretrained: Annotated[Optional[str], typer.Option(help="auto | none | PATH (checkpoint) | RUN_DIR (a run; head matched by class name) | hf-hub:REPO [auto]")] = None,
    adapt: Annotated[Optional[str], typer.Option(help="adaptation method, optionally +fisher[=W]+entropy[=W] [finetune]")] = None,
    adapt_weight: Annotated[Optional[float], typer.Option(help="weight of the adaptation loss [1]")] = None,
    fisher: Annotated[Optional[float], typer.Option(help="weight of the Fisher loss add-on")] = None,
    entropy: Annotated[Optional[float], typer.Option(help="weight of target entropy minimisation")] = None,
    target_labels: Annotated[Optional[int], typer.Option(help="labelled target objects (few-shot)")] = None,
    source_labels: Annotated[Optional[int], typer.Option(help="train on N labelled source objects (a fifth held out to validate); 0 = all [0]")] = None,
    target_labels_from: Annotated[Optional[Path], typer.Option(help="store whose labelling sessions (`label`) add labelled objects")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="epochs [by training-set size: at least --min-steps steps, 3 epochs]")] = None,
    min_steps: Annotated[Optional[int], typer.Option(help="optimizer steps the automatic --epochs reaches [300]")] = None,
    stages: Annotated[Optional[str], typer.Option(help="progressive unfreezing, RULE=EPOCHS[@LR],...: head | top:F | top:N | all_but_stem | all | prefix:A+B")] = None,
    probe_epochs: Annotated[Optional[int], typer.Option(help="LP-FT: head-only epochs, then everything at lr/100 with BatchNorm statistics kept; 0 = off [half the epochs under 1,000 training objects, else 0]")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="input size in px [store's]")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="batch size [32]")] = None,
    lr: Annotated[Optional[float], typer.Option(help="the head's learning rate [1e-3]")] = None,
    layer_decay: Annotated[Optional[float], typer.Option(help="lr factor per block from head to stem; 1 = one lr [1]")] = None,
    label_smoothing: Annotated[Optional[float], typer.Option(help="cross-entropy label smoothing [0.1]")] = None,
    head_init: Annotated[Optional[str], typer.Option(help="new head: zero | timm (architecture's own) [zero]")] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="adamw | adam [adamw]")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="weight decay [1e-4]")] = None,
    drop_rate: Annotated[Optional[float], typer.Option(help="dropout before the head [0.2]")] = None,
    scheduler: Annotated[Optional[str], typer.Option(help="plateau (on val loss) | cosine (per step, after warm-up) | none [plateau]")] = None,
    lr_patience: Annotated[Optional[int], typer.Option(help="plateau epochs before the lr drops [2]")] = None,
    lr_factor: Annotated[Optional[float], typer.Option(help="lr multiplier on a plateau [0.1]")] = None,
    early_stop: Annotated[Optional[int], typer.Option(help="stop after N epochs without a better val loss; 0=off [0]")] = None,
    balance: Annotated[Optional[str], typer.Option(help="unbalanced classes: none | weights | sampler [none]")] = None,
    augment: Annotated[Optional[str], typer.Option(help="flip,rot90,rotate,rotate45,shift,zoom or none [flip,rotate,shift,zoom]")] = None,
    seed: Annotated[Optional[int], typer.Option(help="random seed [0]")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="train N seeds into <out>/seed_<s>/ [1]")] = None,
    recursive: Annotated[Optional[int], typer.Option(help="pseudo-labelling rounds on the target [0]")] = None,
    pseudo_top: Annotated[Optional[int], typer.Option(help="confident target objects added per class and round [100]")] = None,
    grad_accum: Annotated[Optional[int], typer.Option(help="batches per optimizer step [1]")] = None,
    clip_grad: Annotated[Optional[float], typer.Option(help="max gradient norm, 0=off [0]")] = None,
    warmup_epochs: Annotated[Optional[float], typer.Option(help="linear lr warm-up [5 % of the steps with cosine]")] = None,
    channels_last: Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last", help="NHWC memory format, faster on CPU [on]")] = None,
    scale_lr: Annotated[Optional[bool], typer.Option("--scale-lr/--no-scale-lr", help="lr x effective batch growth [off]")] = None,
    zero_stage: Annotated[Optional[int], typer.Option(help="DeepSpeed ZeRO stage (deepspeed trainer) [0]")] = None,
    deepspeed_config: Annotated[Optional[str], typer.Option(help="DeepSpeed JSON config (deepspeed trainer)")] = None,
    trainer: Annotated[Optional[str], typer.Option(help="training loop plugin [standard]")] = None,
    band_policy: Annotated[Optional[str], typer.Option(help="auto | mean: source bands → model input (mean: one channel, the mean of the bands) [auto]")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda [auto]")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML file of these options")] = None,
    resume: Annotated[bool, typer.Option(help="continue a killed run (or seed/recursive job) in --out")] = False,
):
    """Train (fine-tune or adapt) a classifier from a source store."""
    from . import api

    overrides = dict(backbone=backbone, pretrained=pretrained, adapt=adapt,
                     adapt_weight=adapt_weight, fisher=fisher, entropy=entropy,
                     target_labels=target_labels, source_labels=source_labels, epochs=epochs,
                     target_labels_from=None if target_labels_from is None else str(target_labels_from), min_steps=min_steps,
                     stages=stages, probe_epochs=probe_epochs, layer_decay=layer_decay, label_smoothing=label_smoothing,
                     head_init=head_init,
                     channels_last=channels_last,
                     image_size=image_size, batch_size=batch_size, lr=lr, optimizer=optimizer,
                     weight_decay=weight_decay, drop_rate=drop_rate, scheduler=scheduler,
                     lr_patience=lr_patience, lr_factor=lr_factor, early_stop=early_stop,
                     balance=balance, augment=augment, seed=seed, seeds=seeds,
                     recursive=recursive, pseudo_top=pseudo_top, grad_accum=grad_accum,
                     clip_grad=clip_grad, warmup_epochs=warmup_epochs, scale_lr=scale_lr,
                     zero_stage=zero_stage, deepspeed_config=deepspeed_config,
                     trainer=trainer, device=device, band_policy=band_policy)
    run = api.train(source=source, target=target, out=out, config=config, resume=resume,
                    **overrides)
    for line in run.summary().splitlines():
        console.print(line.replace("trained", "[green]trained[/]", 1)
                      if line.startswith("trained") else line)


TtaOpt = Annotated[int, typer.Option(
    help="test-time augmentation: mean over 1, 2 (flip), 4 (rotations) or 8 (both) views; "
         "cost x views")]


@app.command()
def evaluate(run: RunArg, data: DataOpt,
             split: Annotated[str, typer.Option(help="test | val | train | all")] = "test",
             tta: TtaOpt = 1):
    """Metrics, calibration and label-free scores of a run or seed ensemble, with a report."""
    from .api import load_run
    from .engine.evaluation.report_sections import print_evaluation

    metrics = load_run(run).evaluate(data, split, tta=tta)
    print_evaluation(metrics, console)
    console.print(f"metrics and report in {metrics['report_dir']}")


@app.command()
def predict(run: RunArg, data: DataOpt,
            out: Annotated[Path, typer.Option("--out", help="catalog: .fits, .parquet or .csv")],
            split: Annotated[str, typer.Option(help="test | val | train | all")] = "all",
            batch_size: Annotated[int, typer.Option(help="objects per chunk")] = 256,
            embedding: Annotated[bool, typer.Option(help="add emb_* feature columns")] = False,
            overwrite: Annotated[bool, typer.Option(help="replace an existing catalog")] = False,
            tta: TtaOpt = 1,
            precision: Annotated[Optional[str], typer.Option(
                help="auto (ONNX Runtime fp32 on CPU where installed, else torch fp32) | fp32 | "
                     "bf16 | onnx [$ASTROTRANSFER_PRECISION or auto]")] = None,
            device: Annotated[Optional[str], typer.Option(
                help="cpu | cuda[:N] [a GPU when one is visible, else the CPU]")] = None):
    """Write a catalog of class probabilities for every object of a store (resumable)."""
    from .api import load_run

    # under `astrotransfer launch`, each rank predicts a shard and rank 0 merges
    res = load_run(run).predict(data, out, split, batch_size, overwrite, embedding, tta=tta,
                                precision=precision, device=device)
    if res["catalog"] is None:  # a non-zero rank: rank 0 merges and reports
        return
    console.print(f"[green]wrote[/] {res['catalog']}: {res['n']} rows"
                  + (f" (resumed after {res['resumed_chunks']} chunks)" if res["resumed_chunks"] else ""))


@app.command()
def export(run: RunArg,
           out: Annotated[Path, typer.Option("--out", help="the file to write, e.g. model.onnx")],
           format: Annotated[str, typer.Option("--format", help="onnx")] = "onnx"):
    """Export a run's model for ONNX Runtime (images → features, probabilities)."""
    from .api import load_run

    console.print(f"[green]wrote[/] {load_run(run).export(out, format)}")


@app.command()
def embed(run: RunArg, data: DataOpt,
          split: Annotated[str, typer.Option(help="test | val | train | all")] = "all",
          map_: Annotated[Optional[str], typer.Option("--map", help="draw a tsne | umap map")] = None,
          dims: Annotated[int, typer.Option(help="map dimensions: 2 or 3")] = 2,
          clusters: Annotated[Optional[int], typer.Option(help="k-means K; purity vs labels")] = None,
          tta: TtaOpt = 1):
    """Write penultimate-layer features into the store; optionally map (PNG) and cluster them."""
    from .api import load_run
    from .engine.analysis.embedding import summary_lines

    res = load_run(run).embed(data, split, map_, dims, clusters, tta=tta)
    console.print(f"[green]embedded[/] {res['n']} objects ({res['dim']}-d) into "
                  f"{data}/runs/{res['run_id']}/embeddings")
    for line in summary_lines(res["map"]) if "map" in res else []:
        console.print(line)


@app.command()
def demo(out: Annotated[Path, typer.Option(help="output folder")] = Path("demo_out"),
         n: Annotated[int, typer.Option(help="objects per simulated survey")] = 2000,
         epochs: Annotated[int, typer.Option(help="fine-tuning epochs")] = 4):
    """The main job: transfer a classifier from simulated SDSS to simulated DES."""
    from .demo import run_demo

    run_demo(out, n=n, epochs=epochs, console=console)


def _attach_plugins() -> None:
    from .cli_ingest import build_ingest_app

    reg = get_registry()
    app.add_typer(build_ingest_app([e.obj for e in reg.all("survey")], err_console), name="ingest")
    for impl in reversed(reg.pm.hook.register_commands.get_hookimpls()):
        try:
            impl.function(app=app)
        except Exception as exc:  # a broken plugin must not take the CLI down
            reg.errors.append((impl.plugin_name, f"register_commands raised {exc!r}"))
    for plugin, message in reg.errors:
        err_console.print(f"[yellow]warning:[/] plugin {plugin}: {message}", highlight=False)


def _precheck(argv: list[str]) -> None:
    """Name the known surveys when an unknown one is asked for (click's message does not)."""
    if len(argv) >= 2 and argv[0] == "ingest" and not argv[1].startswith("-"):
        get_registry().get("survey", argv[1])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    logging.basicConfig(level=logging.INFO, format="%(message)s",
                        handlers=[logging.StreamHandler(sys.stderr)])
    rank = int(os.environ.get("RANK", 0)) if int(os.environ.get("WORLD_SIZE", 1)) > 1 else 0
    if rank:  # a launched rank > 0: rank 0 reports, the others only print errors
        logging.getLogger("astrotransfer").setLevel(logging.ERROR)
    try:
        _attach_plugins()
        _precheck(argv)
        with contextlib.redirect_stdout(io.StringIO()) if rank else contextlib.nullcontext(), \
                interrupt.stop_on_signals():
            app(args=argv, prog_name="astrotransfer", standalone_mode=False)
        return 0
    except interrupt.Stopped as exc:  # SIGTERM/SIGINT: work committed, resumable
        err_console.print(f"stopped: {exc}", highlight=False, soft_wrap=True, markup=False)
        return interrupt.EXIT_STOPPED
    except (typer.Exit, click.exceptions.Exit) as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        err_console.print("error: aborted")
        return 130
    except click.ClickException as exc:
        if debug:
            raise
        hint = f" (see `astrotransfer {' '.join(a for a in argv[:2] if not a.startswith('-'))} --help`)"
        err_console.print(f"error: {exc.format_message()}{hint}", highlight=False, soft_wrap=True)
        return 2
    except UserError as exc:
        if getattr(exc, "silent", False):  # another rank failed and says why
            return 1
        if debug:
            raise
        err_console.print(f"error: {' '.join(str(exc).split())}", highlight=False,
                          soft_wrap=True, markup=False)  # one line, whatever the message holds
        return 1
    except KeyboardInterrupt:
        err_console.print("error: interrupted; run the same command again to resume")
        return 130
    except Exception as exc:
        if debug:
            raise
        err_console.print(f"error: {type(exc).__name__}: {exc} (run with --debug for the "
                          f"traceback)".replace("\n", " "), highlight=False, soft_wrap=True,
                          markup=False)
        return 1


def entry() -> None:
    """Console-script entry point: the exit code of `main` becomes the process's."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
