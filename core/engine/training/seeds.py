"""Seed ensembles: `train --seeds N` as N ordinary runs in one job folder.

The job folder holds the job's config.yaml (seeds: N, so `--resume` needs only --out),
seeds.json and one ordinary run directory per seed; `engine.runs` owns that layout, and
`evaluate` aggregates mean ± std over the members.

A network's accuracy on a shifted target varies far more between seeds than on its own
survey, so a transfer result without a spread over seeds is not a result (Wei et al. report
mean ± std over runs); this makes that the cheap default to ask for.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from ...config import TrainConfig
from ...errors import UserError
from ...store import locked
from ..runs import SEEDS_FILE, RunDir, write_seed_job
from .single_run import preflight, train_one

log = logging.getLogger("astrotransfer")


def member_state(path: Path) -> str:
    """'new' (absent), 'partial' (has last.pt: resume it), or 'broken' (no epoch finished)."""
    if not path.exists():
        return "new"
    return "partial" if (path / "last.pt").exists() and (path / "run.json").exists() else "broken"


def open_job_dir(out: Path, cfg: TrainConfig, resume: bool, marker: str) -> None:
    """Create the job folder, or check that --resume points at one of this kind."""
    if resume:
        if not (out / marker).exists() and not (out / "config.yaml").exists():
            raise UserError(f"cannot resume {out}: it holds no {marker}; start it again "
                            f"without --resume")
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"run directory {out} already exists and is not empty; choose another "
                        f"--out, or pass --resume to continue it")
    out.mkdir(parents=True, exist_ok=True)
    RunDir(out).write_config(cfg.to_dict())


def run_member(cfg: TrainConfig, resume: bool) -> RunDir:
    """Train one member run, resuming it when an earlier attempt finished an epoch."""
    path = Path(cfg.out)
    state = member_state(path)
    if state == "broken" or (state == "partial" and not resume):
        shutil.rmtree(path)
        state = "new"
    return train_one(cfg, resume=state == "partial")


def train_seeds(cfg: TrainConfig, resume: bool = False) -> RunDir:
    """`cfg.seeds` runs with seeds cfg.seed, cfg.seed + 1, ... in one job folder."""
    preflight(cfg)
    out = Path(cfg.out)
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    open_job_dir(out, cfg, resume, SEEDS_FILE)
    with locked(out, "run directory"):
        paths = write_seed_job(out, seeds)
        for s, path in zip(seeds, paths):
            log.info("seed %d (%d of %d) -> %s", s, seeds.index(s) + 1, len(seeds), path)
            member = dataclasses.replace(cfg, seed=s, seeds=1, out=str(path))
            run_member(member, resume)
    return RunDir(out)
