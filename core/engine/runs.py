"""Run directories and checkpoints.

A run directory holds: config.yaml (resolved), run.json (what is needed to rebuild the
model), metrics.jsonl (one line per finished epoch), train.log, best.pt and last.pt.
Checkpoints hold only tensors and plain Python values so that they load with
`torch.load(weights_only=True)`: a checkpoint can never execute code.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import pickle
import re
import uuid
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import UserError, disk_space

CHECKPOINT_FORMAT = 1


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text under a temporary name, then rename: readers see the old file or
    the new one, and a full disk leaves the old one (and a one-line `DiskFull`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with disk_space(path, needed=len(data), tmp=tmp):
        tmp.write_bytes(data)
        os.replace(tmp, path)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Serialize in memory, write under a temporary name, then rename: a kill never leaves
    a torn checkpoint, and a full disk (which torch's zip writer reports only as "unexpected
    pos") leaves the previous one and says how many bytes this one needed."""
    import io

    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **payload}, buf)
    atomic_write_bytes(path, buf.getbuffer())


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist; train the run first "
                        f"(or point to a run directory that finished an epoch)")
    try:
        # weights_only: tensors and plain values only, so loading can never run code
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if not found:  # not a pickle of code: garbage, a text file, a half-copied file
            raise UserError(f"checkpoint {path} is corrupt or not a torch checkpoint (it "
                            f"does not unpickle); re-train or restore the file") from None
        what = f"it pickles {found.group(1)}"
        raise UserError(f"checkpoint {path} needs pickled code to load, which is refused for "
                        f"safety ({what}); use checkpoints written by astrotransfer, or re-save "
                        f"it as a plain state dict") from None
    except Exception as exc:
        raise UserError(f"checkpoint {path} is corrupt or not a torch checkpoint "
                        f"({type(exc).__name__}); re-train or restore the file") from None
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict)):
        raise UserError(f"checkpoint {path} is not an astrotransfer checkpoint (no 'model' "
                        f"state dict); re-train or restore the file")
    return ckpt


@contextlib.contextmanager
def weights_only_loads(*safe_globals):
    """Every `torch.load` inside runs with `weights_only=True`, whatever its caller asked.

    For third-party loaders that pass `weights_only=False` themselves, such as DeepSpeed's
    `engine.load_checkpoint` on `train --resume`: a run directory is data, and unpickling it
    must never run code. `safe_globals` are the plain-data classes such a loader's files are
    known to hold (see `deepspeed_safe_globals`).
    """
    original = torch.load

    def load(*args, **kwargs):
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    torch.load = load
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            yield
    finally:
        torch.load = original


def deepspeed_safe_globals() -> list:
    """The data classes DeepSpeed pickles into its ZeRO optimizer states (fp32/fp16/bf16,
    stages 0-3): loss scalers, the stage enum and parameter fragment addresses."""
    names = [("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
             ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
             ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
             ("deepspeed.utils.tensor_fragment", "fragment_address")]
    found = []
    for module, name in names:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return found


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def info_path(self) -> Path:
        return self.path / "run.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def run_id(self) -> str:
        return self.info()["run_id"]

    def info(self) -> dict[str, Any]:
        if not self.info_path.exists():
            raise UserError(f"{self.path} is not a run directory (no run.json); "
                            f"pass the --out folder of `astrotransfer train`")
        return json.loads(self.info_path.read_text())

    def write_info(self, info: dict[str, Any]) -> None:
        atomic_write_text(self.info_path, json.dumps(info, indent=2))

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_text(self.config_path, yaml.safe_dump(config, sort_keys=False))

    def epochs(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line]

    def append_epoch(self, record: dict[str, Any]) -> None:
        line = json.dumps(record) + "\n"
        with open(self.metrics_path, "a") as fh:
            size = fh.tell()
            try:
                with disk_space(self.metrics_path, needed=len(line)):
                    fh.write(line)
                    fh.flush()
                    os.fsync(fh.fileno())
            except UserError:
                fh.truncate(size)  # no torn line; last.pt holds the epoch anyway
                raise

    def truncate_epochs(self, last_epoch: int) -> None:
        """Drop epoch records past the checkpoint, so a resumed run repeats none of them."""
        kept = [r for r in self.epochs() if r["epoch"] <= last_epoch]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))


# ---------------------------------------------------------------- job folders
# The one place that knows how multi-run jobs lay out their member runs:
#
#   <out>/seeds.json       {"seeds": [s, s+1, ...], "runs": ["seed_<s>", ...]}   (train --seeds N)
#   <out>/seed_<s>/        an ordinary run directory trained with seed s
#   <out>/round_<k>/       an ordinary run directory per pseudo-label round     (--recursive K)
#   <out>/pseudo_<k>.json  the target rows and labels round k trains on
#   <out>/rounds.jsonl     one record per finished round

SEEDS_FILE = "seeds.json"
ROUNDS_FILE = "rounds.jsonl"


def seed_dir(out: Path, seed: int) -> Path:
    return Path(out) / f"seed_{seed}"


def round_dir(out: Path, k: int) -> Path:
    return Path(out) / f"round_{k}"


def pseudo_file(out: Path, k: int) -> Path:
    return Path(out) / f"pseudo_{k}.json"


def write_seed_job(out: Path, seeds: list[int]) -> list[Path]:
    """Record a seed job's members in seeds.json; returns their run directories."""
    names = [seed_dir(out, s).name for s in seeds]
    atomic_write_text(Path(out) / SEEDS_FILE, json.dumps({"seeds": seeds, "runs": names},
                                                         indent=2))
    return [Path(out) / n for n in names]


def seed_runs(path: Path | str) -> list[Path]:
    """The finished-enough `seed_*/` runs of a seed job (they have run.json), in seed order;
    [] for anything else."""
    path = Path(path)
    if not path.is_dir():
        return []
    found = [p for p in path.glob("seed_*") if (p / "run.json").is_file()]

    def key(p: Path):
        tail = p.name[len("seed_"):]
        return (0, int(tail), "") if tail.isdigit() else (1, 0, tail)
    return sorted(found, key=key)


def round_runs(path: Path | str) -> list[Path]:
    """The `round_*/` runs of a recursive job, in round order."""
    found = [p for p in Path(path).glob("round_*") if p.name[6:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[6:]))


def job_kind(path: Path | str) -> str:
    """"seeds", "recursive" or "run" (a plain run directory, or anything else)."""
    path = Path(path)
    if (path / SEEDS_FILE).exists() or (not (path / "run.json").exists() and seed_runs(path)):
        return "seeds"
    if (path / ROUNDS_FILE).exists() or (not (path / "run.json").exists() and round_runs(path)):
        return "recursive"
    return "run"


def member_runs(path: Path | str) -> list[Path]:
    """The run directories a path stands for: a seed job's members (as seeds.json lists
    them), a recursive job's rounds, or the path itself."""
    path = Path(path)
    kind = job_kind(path)
    if kind == "seeds":
        marker = path / SEEDS_FILE
        if marker.exists():
            return [path / name for name in json.loads(marker.read_text())["runs"]]
        return seed_runs(path)
    if kind == "recursive":
        return round_runs(path)
    return [path]


def read_rounds(out: Path | str) -> dict[int, dict]:
    """round -> record of rounds.jsonl ({} when there is none)."""
    path = Path(out) / ROUNDS_FILE
    if not path.exists():
        return {}
    return {r["round"]: r for r in map(json.loads, path.read_text().splitlines()) if r}


def write_rounds(out: Path | str, records: dict[int, dict]) -> None:
    atomic_write_text(Path(out) / ROUNDS_FILE,
                      "".join(json.dumps(records[i]) + "\n" for i in sorted(records)))
