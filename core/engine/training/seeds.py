"""Seed ensembles: `train --seeds N` as N ordinary runs in one job folder.

Layout (read by `evaluate`, which aggregates mean ± std over `seed_*`):

    <out>/config.yaml     the job's config (seeds: N), so `--resume` needs only --out
    <out>/seeds.json      {"seeds": [s, s+1, ...], "runs": ["seed_<s>", ...]}
    <out>/seed_<s>/       a normal run directory trained with seed s

A network's accuracy on a shifted target varies far more between seeds than on its own
survey, so a transfer result without a spread over seeds is not a result (Wei et al. report
mean ± std over runs); this makes that the cheap default to ask for.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

from ...config import TrainConfig
from ...errors import UserError
from ...store import locked
from ..runs import RunDir, atomic_write_text

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
    from .single_run import train_one

    path = Path(cfg.out)
    state = member_state(path)
    if state == "broken" or (state == "partial" and not resume):
        shutil.rmtree(path)
        state = "new"
    return train_one(cfg, resume=state == "partial")


def train_seeds(cfg: TrainConfig, resume: bool = False) -> RunDir:
    from .single_run import preflight

    preflight(cfg)
    out = Path(cfg.out)
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    names = [f"seed_{s}" for s in seeds]
    open_job_dir(out, cfg, resume, "seeds.json")
    with locked(out, "run directory"):
        atomic_write_text(out / "seeds.json", json.dumps({"seeds": seeds, "runs": names},
                                                         indent=2))
        for s, name in zip(seeds, names):
            log.info("seed %d (%d of %d) -> %s", s, seeds.index(s) + 1, len(seeds), out / name)
            member = dataclasses.replace(cfg, seed=s, seeds=1, out=str(out / name))
            run_member(member, resume)
    return RunDir(out)
