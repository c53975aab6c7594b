"""Scale-out, registered as a default plugin: the `astrotransfer launch` command.

The command is a thin client of `engine.distributed.launch`, which checks the job and hands
it to DeepSpeed's own launchers; each rank then runs `python -m astrotransfer.cli
<train|predict> ...` with RANK/WORLD_SIZE set.

Inside a rank, the engine finds its rank itself (`training.dispatch.train` switches to the
rank-aware path, `Run.predict` shards by rank) and the CLI keeps ranks > 0 quiet; nothing
is wrapped or swapped. The "deepspeed" trainer registers in `plugins/trainers.py` beside
the standard one.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from astrotransfer.engine.distributed.launch import plan_launch, run_launcher
from astrotransfer.engine.distributed.options import DistOptions
from astrotransfer.errors import UserError
from astrotransfer.hookspecs import hookimpl

# ---------------------------------------------------------------- the command


def launch(
    command: Annotated[list[str], typer.Argument(help="after --: train ... | predict ...")],
    num_procs: Annotated[Optional[int], typer.Option("--num-procs", help="CPU ranks per node (gloo)")] = None,
    num_gpus: Annotated[Optional[int], typer.Option("--num-gpus", help="GPU ranks per node (nccl)")] = None,
    hostfile: Annotated[Optional[Path], typer.Option(help="'<host> slots=<n>' per line")] = None,
    num_nodes: Annotated[Optional[int], typer.Option(help="use the first N hosts")] = None,
    master_addr: Annotated[Optional[str], typer.Option(help="node 0's address")] = None,
    master_port: Annotated[Optional[int], typer.Option(help="rendezvous port (default: free port, 29500 with a hostfile)")] = None,
    no_ssh: Annotated[bool, typer.Option("--no-ssh", help="start this node only (SLURM)")] = False,
    node_rank: Annotated[Optional[int], typer.Option(help="this node's index, with --no-ssh")] = None,
    ssh_port: Annotated[Optional[int], typer.Option(help="sshd port of the hosts [22]")] = None,
    connect_timeout: Annotated[float, typer.Option(help="seconds to wait for each host")] = 5.0,
    zero_stage: Annotated[Optional[int], typer.Option(help="ZeRO stage 0-3 [0]")] = None,
    grad_accum: Annotated[Optional[int], typer.Option(help="micro-batches per step [1]")] = None,
    clip_grad: Annotated[Optional[float], typer.Option(help="max gradient norm, 0=off [0]")] = None,
    scale_lr: Annotated[Optional[bool], typer.Option("--scale-lr/--no-scale-lr", help="lr x ranks x grad-accum, i.e. with the global batch [on]")] = None,
    warmup_epochs: Annotated[Optional[float], typer.Option(help="ramp to the scaled lr [2]")] = None,
    sync_bn: Annotated[Optional[bool], typer.Option("--sync-bn/--no-sync-bn", help="BatchNorm over the global batch; default off")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16")] = None,
    deepspeed_config: Annotated[Optional[Path], typer.Option(help="JSON merged over the generated config")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the model; default off")] = None,
    dry_run: Annotated[bool, typer.Option(help="print the launcher command and stop")] = False,
):
    """Run `train` or `predict` on several ranks (processes, GPUs, nodes) with DeepSpeed."""
    if "--debug" in sys.argv[1:] and "--debug" not in command:  # main() took it off argv
        command = [*command, "--debug"]
    local, args = plan_launch(list(command), num_procs=num_procs, num_gpus=num_gpus,
                              hostfile=hostfile, num_nodes=num_nodes, master_addr=master_addr,
                              master_port=master_port, no_ssh=no_ssh, node_rank=node_rank,
                              ssh_port=ssh_port, connect_timeout=connect_timeout)
    options = {k: v for k, v in dict(
        zero_stage=zero_stage, grad_accum=grad_accum, clip_grad=clip_grad,
        lr_scaling=None if scale_lr is None else ("linear" if scale_lr else "none"),
        warmup_epochs=warmup_epochs, sync_bn=sync_bn, precision=precision, compile=compile,
        deepspeed_config=str(deepspeed_config.resolve()) if deepspeed_config else None,
        device="cpu" if num_procs else ("cuda" if num_gpus else None)).items() if v is not None}
    DistOptions(**options).validate()
    if deepspeed_config is not None and not deepspeed_config.is_file():
        raise UserError(f"DeepSpeed config {deepspeed_config} does not exist")
    if num_procs and "OMP_NUM_THREADS" not in os.environ:  # no oversubscribed cores
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // num_procs))
    if dry_run:
        print(json.dumps({"local": local, "args": args, "options": options}))
        return
    code = run_launcher(local, args, options)
    if code:
        raise typer.Exit(code)


@hookimpl
def register_commands(app):
    if not any((i.name or getattr(i.callback, "__name__", "")) == "launch"
               for i in app.registered_commands):
        app.command(context_settings={"allow_interspersed_args": False})(launch)
