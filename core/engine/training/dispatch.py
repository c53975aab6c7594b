"""`train`: the one entry point that turns a TrainConfig into a run or a job of runs.

It picks the job from the config (a seed ensemble for `seeds > 1`, recursive
pseudo-labelling for `recursive > 0`, else one run) and the path from the process: under
`astrotransfer launch` (RANK/WORLD_SIZE set by DeepSpeed's launcher) it hands over to the
rank-aware entry, which runs this same local path on rank 0 and joins the others to the
DeepSpeed trainer's loop. Nothing swaps functions at run time: the choice is made here.
"""
from __future__ import annotations

from ...config import TrainConfig, normalize
from ..runs import RunDir
from .recursive import train_recursive
from .seeds import train_seeds
from .single_run import train_one


def train(cfg: TrainConfig, resume: bool = False) -> RunDir:
    """One run, or a seed ensemble (`seeds` > 1) or recursive job (`recursive` > 0).

    For the multi-run jobs the returned RunDir is the job folder (seeds.json / rounds.jsonl),
    not a run; each member is an ordinary run directory inside it.
    """
    from ..distributed.options import launched

    if launched():
        from ..distributed.rank_training import train_distributed

        return train_distributed(cfg, resume, single_process_train=train_local)
    return train_local(cfg, resume)


def train_local(cfg: TrainConfig, resume: bool = False) -> RunDir:
    """`train` in this process: the job the config asks for, its runs one after another."""
    normalize(cfg)
    if cfg.seeds > 1:
        return train_seeds(cfg, resume)
    if cfg.recursive:
        return train_recursive(cfg, resume)
    return train_one(cfg, resume)
