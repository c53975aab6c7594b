"""Writing prediction catalogs incrementally, resumably, and atomically.

Each chunk of predictions is written as its own Parquet part inside `<out>.partial/`, with
a manifest saying what is being predicted. A killed `predict` run again finds the parts
already written and continues after them, so no row is lost or duplicated. When all parts
exist they are streamed into the requested format under a temporary name, then renamed:
the final catalog appears complete or not at all.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import UserError
from .store import locked

FORMATS = {".csv": "csv", ".parquet": "parquet", ".fits": "fits"}


def catalog_format(path: Path) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UserError(f"catalog {path} has an unknown suffix; use .fits, .parquet or .csv")
    return fmt


class PartWriter:
    """Chunk parts under `<out>.partial/`; `done_chunks()` tells a resumed run where to start."""

    def __init__(self, out: Path, manifest: dict, overwrite: bool = False):
        self.out = Path(out)
        self.fmt = catalog_format(self.out)
        if self.out.exists() and not overwrite:
            raise UserError(f"catalog {self.out} already exists; pass --overwrite to replace it")
        parent = self.out.parent
        if not parent.exists():
            raise UserError(f"output folder {parent} does not exist; create it first")
        if not os.access(parent, os.W_OK):
            raise UserError(f"output folder {parent} is not writable; choose another --out")
        self.dir = self.out.with_name(self.out.name + ".partial")
        self.dir.mkdir(exist_ok=True)
        self._lock = locked(self.dir, "catalog")
        self._lock.__enter__()
        mpath = self.dir / "manifest.json"
        if mpath.exists() and json.loads(mpath.read_text()) != manifest:
            for p in self.dir.glob("part-*.parquet"):  # a different job: start over
                p.unlink()
        mpath.write_text(json.dumps(manifest))

    def done_chunks(self) -> int:
        """Parts are written under a temporary name and renamed, so any part present is whole."""
        n = 0
        while (self.dir / f"part-{n:06d}.parquet").exists():
            n += 1
        return n

    def write_chunk(self, i: int, columns: dict[str, np.ndarray]) -> None:
        tmp = self.dir / f".part-{i:06d}.tmp"
        pq.write_table(pa.table(columns), tmp)
        os.replace(tmp, self.dir / f"part-{i:06d}.parquet")

    def finish(self, n_chunks: int) -> Path:
        parts = [self.dir / f"part-{i:06d}.parquet" for i in range(n_chunks)]
        tmp = self.out.with_name(f".{self.out.name}.tmp")
        if self.fmt == "parquet":
            with pq.ParquetWriter(tmp, pq.read_schema(parts[0])) as w:
                for p in parts:
                    w.write_table(pq.read_table(p))
        elif self.fmt == "csv":
            with pacsv.CSVWriter(tmp, pq.read_schema(parts[0])) as w:
                for p in parts:
                    w.write_table(pq.read_table(p))
        else:
            from astropy.table import Table, vstack
            table = vstack([Table(pq.read_table(p).to_pydict()) for p in parts])
            table.write(tmp, format="fits", overwrite=True)
        os.replace(tmp, self.out)
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.out

    def close(self) -> None:
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None
