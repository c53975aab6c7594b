"""Shared helpers of the tools/ scripts: where the real data is, machine description and
result output.

Every tool reads the real data from SHARED_DATA: ../shared/data beside the project, or the
folder ASTROTRANSFER_SHARED_DATA names (the test suite's variable too, so a tool run by a
test reads what the test skips on). Every benchmark prints one JSON document (and writes it with --json FILE) that starts with
the machine it ran on and the load average around the measurement, because numbers taken
on a shared machine mean little without it.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

SHARED_DATA = Path(os.environ.get("ASTROTRANSFER_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))


def machine() -> dict:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__, "load_avg_1m_start": os.getloadavg()[0],
            "torch_threads": torch.get_num_threads()}


@contextmanager
def timed(box: dict, key: str = "seconds"):
    t0 = time.perf_counter()
    yield
    box[key] = round(time.perf_counter() - t0, 3)


def add_round(result: dict, row: dict) -> None:
    """Record one interleaved round and show it at once (a long benchmark shows progress)."""
    result["rounds"].append(row)
    print(row, file=sys.stderr, flush=True)


def emit_rounds(result: dict, ratio: str, summary: str, json_path: str | None) -> None:
    """`emit` with `result[summary]` set to the median over rounds of each round's `ratio`."""
    result[summary] = statistics.median(row[ratio] for row in result["rounds"])
    emit(result, json_path)


def emit(result: dict, json_path: str | None) -> None:
    result["machine"]["load_avg_1m_end"] = os.getloadavg()[0]
    text = json.dumps(result, indent=2)
    print(text)
    if json_path:
        Path(json_path).write_text(text + "\n")


def sim_store(path, instrument: str = "sdss", n: int = 600, size: int = 64, seed: int = 0):
    """A simulated survey store (60/20/20 % splits), through the public API."""
    import astrotransfer as at

    return at.ingest("sim", path, instrument=instrument, n=n, size=size, seed=seed,
                     split_fractions="0.6,0.2,0.2").path


def n_labelled(store_path, split: str = "train") -> int:
    """Labelled objects of a split (what a trainer trains on)."""
    import astrotransfer as at

    store = at.open_store(store_path)
    return int((store.column("label")[store.indices(split)] >= 0).sum())
