"""LP-FT for small training sets: the head learns on frozen features before anything else moves.

Why: a few hundred labelled cutouts give a fine-tune a few hundred optimizer steps, and the
first of them are driven by a head that knows nothing yet. Its large, random gradients flow
into the pretrained body and distort the features before they are used (Kumar et al. 2022,
"Fine-tuning can distort pretrained features and underperform out-of-distribution"). On 300
GZ1 or CEERS objects the plain fine-tune lost to a linear probe on frozen features of the same
backbone (docs/results/recipe.md, section (c)). LP-FT trains the probe first (head only,
backbone frozen) and then fine-tunes everything at a hundredth of the learning rate,
starting from a head that already fits.

BatchNorm statistics stay the pretrained ones throughout (the Keras transfer-learning guide's
rule: BatchNorm in inference mode when the base model is unfrozen). Measured: switching them
to batch statistics when the body unfreezes changes every feature the probe was fitted on,
and a 300-object GZ1 run (fine-tuning at lr 1e-4) fell from 0.91 to 0.42 training accuracy
in that epoch.

Measured on the fixed test splits, 3 seeds (recipe.md (c)): CEERS 0.779 +- 0.014 (balanced
0.675) against the probe's 0.772 (0.653) and the plain fine-tune's 0.746 (0.577); GZ1 0.836 +-
0.002 (0.787) against 0.840 (0.799) and 0.820 (0.767): a tie with the probe on GZ1, where the
best validation loss mostly fell in the probe stage. On every labelled object the runs never
saw (recipe.md (c'): 3,875 GZ1, 1,409 CEERS) LP-FT and the probe tie within the seeds'
spread on both surveys; both beat the plain fine-tune by 2-3 points.

Large sets keep the plain fine-tune: they get enough steps for the head to settle early, and
recipe.md's full-size rows were measured with it.
"""
from __future__ import annotations

import logging

from ...config import TrainConfig

log = logging.getLogger("astrotransfer")

#: training sets below this many objects get LP-FT by default (300 labelled objects are the
#: measured case; the full GZ1 train split, ~3,800, is not touched)
SMALL_SET = 1000
#: the fine-tuning stage's lr as a fraction of --lr (the head's lr in the probe stage).
#: Chosen on the full stores' validation splits (seed 0; docs/results/recipe.md (c)): on
#: CEERS 0.01 gave accuracy 0.770 / balanced 0.682 / NLL 0.565 against 0.727 / 0.619 / 0.582
#: for 0.1 (the probe alone: 0.759 / 0.662 / 0.565); on GZ1 both kept the probe stage's
#: checkpoint (0.877 / 0.844 / 0.312; the probe alone 0.864 / 0.843 / 0.320).
FINETUNE_LR_SCALE = 0.01


def probe_epochs_for(cfg: TrainConfig, n_train: int, pretrained: bool = True) -> int:
    """Head-only epochs before everything trains: the rule when `--probe-epochs` is not given.

    An explicit `cfg.probe_epochs` wins (0 turns LP-FT off). Otherwise half the run's epochs
    (rounded down) for a training set under `SMALL_SET` objects, and 0 when the run cannot or
    should not have a probe stage: explicit `--stages`, a target survey in the run (domain
    adaptation, few-shot target labels, recursive pseudo-labelling: not measured with
    LP-FT, and a recursive round continues a trained model), a backbone without pretrained
    weights (random features are not worth probing), fewer than 2 epochs, or a trainer
    other than the standard one (the DeepSpeed trainer has no stages).

    Args:
        cfg: the run's config, with `epochs` already fixed (`resolve_epochs`).
        n_train: labelled objects in the training set.
        pretrained: whether the backbone got pretrained weights (not random init).
    Returns:
        the number of head-only epochs (0 = plain fine-tune).
    Example:
        >>> cfg = TrainConfig(epochs=34)
        >>> probe_epochs_for(cfg, 240), probe_epochs_for(cfg, 3800)
        (17, 0)
    """
    if cfg.stages or cfg.epochs is None or cfg.epochs < 2:
        return 0
    if cfg.probe_epochs is not None:
        return min(int(cfg.probe_epochs), cfg.epochs - 1)
    adapting = (cfg.target or cfg.pseudo_labels or cfg.adapt != "finetune" or cfg.fisher
                or cfg.entropy)
    if cfg.trainer != "standard" or not pretrained or adapting:
        return 0
    return cfg.epochs // 2 if n_train < SMALL_SET else 0


def apply_lp_ft(cfg: TrainConfig, n_train: int, model=None, pretrained: bool = True) -> bool:
    """Turn `cfg` into an LP-FT schedule in place when `probe_epochs_for` says so.

    The schedule is written as ordinary stages (`head` for K epochs, then `all` at
    `FINETUNE_LR_SCALE` x lr) with `keep_bn_stats` on, so config.yaml records exactly what
    ran. The rule is deterministic (size, epochs, weights), so a resumed run derives the
    same stages again. A `model` whose head cannot be told from its body keeps the plain
    fine-tune when the rule was automatic. Returns True when it applied.
    """
    if cfg.stages:  # the user's own schedule, or one this rule already wrote (seed jobs)
        return False
    automatic = cfg.probe_epochs is None
    k = probe_epochs_for(cfg, n_train, pretrained)
    cfg.probe_epochs = k  # config.yaml records the resolved value
    if k <= 0:
        return False
    cfg.stages = [{"train": "head", "epochs": k},
                  {"train": "all", "epochs": None, "lr": cfg.lr * FINETUNE_LR_SCALE}]
    if model is not None:
        from ...errors import UserError
        from .stages import check_stages

        try:
            check_stages(model, cfg.stages)
        except UserError:
            if not automatic:
                raise
            cfg.stages, cfg.probe_epochs = [], 0
            return False
    cfg.keep_bn_stats = True
    log.info("LP-FT for %d training objects: head only for %d epochs, then everything at "
             "lr %.2g for %d (BatchNorm statistics kept; --probe-epochs 0 turns it off)",
             n_train, k, cfg.lr * FINETUNE_LR_SCALE, cfg.epochs - k)
    return True
