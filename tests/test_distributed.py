"""Scale-out on real DeepSpeed ranks: two processes over gloo on this CPU, no mocks.

The multi-process tests share one two-rank run (module fixture) and are marked slow: each
launch pays for three Python start-ups (launcher + two ranks) before any training.

Stated tolerances for "two ranks with per-rank batch 8 == one process with batch 16"
(synced BN, no stochastic augmentation or dropout, ZeRO stage 2 on the ranks):
  per-epoch train loss and adaptation loss: relative 1e-4 (measured ~5e-6);
  validation loss: relative 1e-2 (measured ~1e-3; eval uses BN running statistics, which
  follow parameters whose gradients are pure rounding noise: BN biases feeding another BN);
  class probabilities of the final models on the target store: absolute 5e-3 (~5e-4).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from astrotransfer.config import TrainConfig
from astrotransfer.engine.distributed import ds_config as C
from astrotransfer.engine.distributed import options as D
from astrotransfer.engine.training.dispatch import train
from astrotransfer.errors import UserError
from astrotransfer.store import CutoutStore
from conftest import TINY_BACKBONE, error_lines, run_cli

EPOCHS = 3
# plateau: the DeepSpeed trainer's lr follows Goyal et al.'s warm-up to a scaled lr, not
# the standard trainer's cosine; with --no-scale-lr both hold the lr flat for 3 epochs
RECIPE = {"adapt": "mmd", "backbone": TINY_BACKBONE, "pretrained": "none", "epochs": EPOCHS,
          "augment": [], "drop_rate": 0.0, "seed": 5, "scheduler": "plateau"}
SCALING = ["--no-scale-lr", "--sync-bn", "--zero-stage", "2"]


def train_args(src, tgt, cfg, out, *extra):
    return ["train", "--source", src, "--target", tgt, "--config", cfg, "--out", out,
            "--batch-size", "8", *extra]


def epochs(run) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "recipe.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    return path


@pytest.fixture(scope="module")
def two_rank_run(sim_pair, recipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "r2"
    proc = run_cli("launch", "--num-procs", "2", *SCALING, "--",
                   *train_args(*sim_pair, recipe, out), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


# ---------------------------------------------------------------- two real ranks


@pytest.mark.slow
def test_two_ranks_train_and_only_rank0_writes(two_rank_run):
    out, proc = two_rank_run
    recs = epochs(out)
    assert [r["epoch"] for r in recs] == list(range(1, EPOCHS + 1))  # one writer: no repeats
    assert all(r["world_size"] == 2 for r in recs)
    assert recs[-1]["train_loss"] < recs[0]["train_loss"]
    assert {p.name for p in out.iterdir()} == {"config.yaml", "run.json", "metrics.jsonl",
                                                "best.pt", "last.pt", "deepspeed"}
    tag = out / "deepspeed" / f"epoch{EPOCHS:04d}"
    assert sorted(p.name for p in tag.iterdir()) == [  # ZeRO-2: each rank its optimizer shard
        "mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    assert len(list((out / "deepspeed").glob("epoch*"))) == 1  # older tags pruned
    assert proc.stdout.count("trained ") == 1  # rank 1's console output is suppressed
    assert proc.stderr.count(f"epoch 1/{EPOCHS}") == 1
    assert yaml.safe_load((out / "config.yaml").read_text())["trainer"] == "deepspeed"
    ckpt = torch.load(out / "best.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in ckpt["model"].values())


@pytest.mark.slow
def test_two_ranks_match_one_process_with_the_same_global_batch(two_rank_run, sim_pair,
                                                                tmp_path):
    from astrotransfer.engine.inference.streaming import load_run_model, stream_predictions

    out, _ = two_rank_run
    single = tmp_path / "single"
    train(TrainConfig(source=str(sim_pair[0]), target=str(sim_pair[1]), out=str(single),
                      batch_size=16, **RECIPE))
    for a, b in zip(epochs(single), epochs(out), strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["adapt_loss"] == pytest.approx(a["adapt_loss"], rel=1e-4)
        assert b["train_acc"] == pytest.approx(a["train_acc"], abs=1e-9)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-2)
    store = CutoutStore.open(sim_pair[1])
    probs = []
    for run in (single, out):
        model, info, _ = load_run_model(run)
        probs.append(np.concatenate([p for _, p, _ in stream_predictions(
            model, store, store.indices("all"), [0, 1, 2], info["image_size"])]))
    assert np.abs(probs[0] - probs[1]).max() < 5e-3


@pytest.mark.slow
def test_killed_launch_resumes_on_two_ranks(two_rank_run, sim_pair, recipe, tmp_path):
    reference, _ = two_rank_run
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "astrotransfer.cli", "launch", "--num-procs", "2", *SCALING,
           "--", *map(str, train_args(*sim_pair, recipe, out))]
    job = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + 400
    while job.poll() is None and time.monotonic() < deadline and not (
            metrics.exists() and metrics.read_text().count("\n") >= 1):
        time.sleep(0.02)
    if job.poll() is not None:
        pytest.fail(f"launch ended before it could be killed ({job.returncode}): "
                    f"{job.stderr.read().decode()[-3000:]}")
    os.killpg(job.pid, signal.SIGKILL)  # the launcher, DeepSpeed's launcher and both ranks
    assert job.wait() == -signal.SIGKILL
    done = metrics.read_text().count("\n")
    assert 1 <= done < EPOCHS
    for _ in range(100):  # every process of the job is gone, none left holding the lock
        try:
            os.killpg(job.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("processes of the killed launch survived")
    proc = run_cli("launch", "--num-procs", "2", *SCALING, "--",
                   *train_args(*sim_pair, recipe, out, "--resume"), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming" in proc.stderr
    got, want = epochs(out), epochs(reference)
    assert [r["epoch"] for r in got] == list(range(1, EPOCHS + 1))
    for a, b in zip(want, got):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-6)


@pytest.mark.slow
def test_sharded_predict_equals_single_process_and_resumes(two_rank_run, sim_pair, tmp_path):
    from astrotransfer.engine.inference.catalog import predict_catalog

    run, _ = two_rank_run
    single = tmp_path / "single.parquet"
    predict_catalog(run, sim_pair[1], single, batch_size=20)
    sharded = tmp_path / "sharded.parquet"
    # as if a first launch died after rank 1 finished its shard: its parts are kept
    predict_catalog(run, sim_pair[1], sharded, batch_size=20, rank=1, world=2)
    assert not sharded.exists() and len(list(tmp_path.glob("sharded.parquet.partial/part-*"))) == 2
    proc = run_cli("launch", "--num-procs", "2", "--", "predict", run, "--data", sim_pair[1],
                   "--out", sharded, "--batch-size", "20", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = pd.read_parquet(single), pd.read_parquet(sharded)
    assert len(b) == CutoutStore.open(sim_pair[1]).n and b["object_id"].is_unique
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=0, atol=1e-6)
    assert proc.stdout.count("wrote ") == 1
    assert not (tmp_path / "sharded.parquet.partial").exists()


# ---------------------------------------------------------------- errors: one line, no hang


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a GPU-less machine")
def test_num_gpus_without_gpus_is_one_line(tmp_path):
    proc = run_cli("launch", "--num-gpus", "2", "--", "train", "--source", "x.zarr",
                   "--out", tmp_path / "r", timeout=60)
    assert proc.returncode != 0
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "--num-gpus 2" in lines[0] and "--num-procs" in lines[0], lines


@pytest.mark.parametrize("host", ["node-07.invalid", "192.0.2.1"])  # no DNS; TEST-NET-1
def test_unreachable_host_in_hostfile_is_one_line(tmp_path, host):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(f"# two nodes\n{host} slots=2\nlocalhost slots=2\n")
    t0 = time.monotonic()
    proc = run_cli("launch", "--hostfile", hostfile, "--connect-timeout", "2", "--",
                   "train", "--source", "x.zarr", "--out", tmp_path / "r", timeout=60)
    assert time.monotonic() - t0 < 45
    lines = error_lines(proc.stderr)
    assert proc.returncode != 0 and len(lines) == 1, lines
    assert "unreachable" in lines[0] and f"'{host}'" in lines[0]


def test_launch_refuses_bad_hostfile_and_other_commands(tmp_path):
    bad = tmp_path / "hostfile"
    bad.write_text("node-1 cores=4\n")
    proc = run_cli("launch", "--hostfile", bad, "--", "predict", "r", "--data", "d", timeout=60)
    lines = error_lines(proc.stderr)
    assert proc.returncode != 0 and len(lines) == 1 and "slots=" in lines[0], lines
    proc = run_cli("launch", "--num-procs", "2", "--", "evaluate", "r", timeout=60)
    lines = error_lines(proc.stderr)
    assert proc.returncode != 0 and len(lines) == 1 and "train or predict" in lines[0], lines


def test_no_ssh_node_mode_plans_one_node(tmp_path):
    from astrotransfer.engine.distributed.launch import plan_launch

    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=2\n127.0.0.1 slots=2\n")
    local, args = plan_launch(["train", "--source", "s"], hostfile=hostfile, no_ssh=True,
                              node_rank=1, master_addr="127.0.0.1", num_procs=2)
    assert not local
    assert args[args.index("--node_rank") + 1] == "1" and "--no_ssh" in args
    assert args[args.index("--num_gpus") + 1] == "2" and args[-3:] == ["train", "--source", "s"]
    with pytest.raises(UserError, match="--node-rank 2 is outside"):
        plan_launch(["train"], hostfile=hostfile, no_ssh=True, node_rank=2,
                    master_addr="127.0.0.1")


@pytest.mark.slow
def test_no_ssh_node_mode_runs_through_deepspeeds_runner(two_rank_run, sim_pair, tmp_path):
    """The SLURM form on a one-node hostfile: DeepSpeed's runner, not the local shortcut."""
    run, _ = two_rank_run
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=2\n")
    out = tmp_path / "cat.csv"
    proc = run_cli("launch", "--hostfile", hostfile, "--no-ssh", "--node-rank", "0",
                   "--master-addr", "127.0.0.1", "--", "predict", run, "--data", sim_pair[0],
                   "--out", out, "--batch-size", "32", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(out)
    assert len(table) == CutoutStore.open(sim_pair[0]).n and table["object_id"].is_unique


# ---------------------------------------------------------------- pieces, in process


def test_micro_batches_cover_the_global_batch_once():
    for m, accum, world in [(16, 1, 2), (9, 1, 2), (24, 3, 2), (7, 2, 3)]:
        seen = np.concatenate([p for r in range(world)
                               for p in C.micro_positions(m, accum, world, r)])
        assert np.array_equal(np.sort(seen), np.arange(m))
        assert all(len(p) for r in range(world) for p in C.micro_positions(m, accum, world, r))
    assert C.global_steps(54, 16, 1, 2) == (4, False)   # tail of 6: every rank gets 3
    assert C.global_steps(51, 16, 1, 2) == (3, True)    # tail of 3: a rank would get 1
    assert C.global_steps(56, 16, 2, 2) == (4, False)   # tail of 8: 2 per rank and micro-step
    assert C.global_steps(10, 16, 1, 2) == (1, False)   # one short batch is all there is
    assert C.global_steps(3, 16, 1, 2) == (0, True)     # too few: the trainer refuses
    rows, weight = C.eval_shard(5, 2, 1)
    assert list(rows) == [3, 4, 0] and list(weight) == [1, 1, 0]


def test_lr_scaling_with_warmup():
    opts = D.DistOptions(lr_scaling="linear", warmup_epochs=2)
    assert C.lr_at(0, 10, 1e-4, opts, world=4, accum=1) == pytest.approx(1e-4)
    assert C.lr_at(10, 10, 1e-4, opts, world=4, accum=1) == pytest.approx(2.5e-4)
    assert C.lr_at(20, 10, 1e-4, opts, world=4, accum=1) == pytest.approx(4e-4)
    assert C.lr_at(0, 10, 1e-4, D.DistOptions(lr_scaling="none"), 4, 1) == 1e-4


def test_deepspeed_config_generation_and_override(tmp_path, monkeypatch):
    conf = C.build_ds_config(8, 2, D.DistOptions(zero_stage=2, grad_accum=3), bf16=False)
    assert conf["train_batch_size"] == 48 and conf["zero_optimization"] == {"stage": 2}
    assert conf["gradient_clipping"] == 0.0  # DeepSpeed would clip at 1.0 by default
    user = tmp_path / "ds.json"
    user.write_text(json.dumps({"train_batch_size": 64, "zero_optimization": {
        "stage": 3, "overlap_comm": True}}))
    conf = C.build_ds_config(8, 2, D.DistOptions(deepspeed_config=str(user)), bf16=False)
    assert conf["train_batch_size"] == 64 and "gradient_accumulation_steps" not in conf
    assert conf["zero_optimization"] == {"stage": 3, "overlap_comm": True}
    with pytest.raises(UserError, match="does not exist"):
        C.build_ds_config(8, 1, D.DistOptions(deepspeed_config=str(tmp_path / "no.json")), False)
    # precedence: launch option > TrainConfig field > default
    cfg = type("Cfg", (), {"zero_stage": 1, "clip_grad": 0.5, "device": "auto"})()
    monkeypatch.setenv(D.ENV_OPTIONS, D.encode_options({"zero_stage": 3}))
    opts = D.resolve_options(cfg)
    assert (opts.zero_stage, opts.clip_grad, opts.device, opts.lr_scaling) == (3, 0.5, None, "linear")
    with pytest.raises(UserError, match="--zero-stage"):
        D.DistOptions(zero_stage=4).validate()
