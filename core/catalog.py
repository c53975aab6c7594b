"""Writing prediction catalogs incrementally, resumably, and atomically.

Each chunk of predictions is written as its own Parquet part inside `<out>.partial/`, with
a manifest saying what is being predicted. A killed `predict` run again finds the parts
already written and continues after them, so no row is lost or duplicated. When all parts
exist they are streamed into the requested format under a temporary name, then renamed:
the final catalog appears complete or not at all. Every format is merged part by part, so
memory stays flat however many rows the catalog has.
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

from .errors import UserError, check_output_folder, disk_space
from .store import locked

FORMATS = {".csv": "csv", ".parquet": "parquet", ".fits": "fits"}


def catalog_format(path: Path) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UserError(f"catalog {path} has an unknown suffix; use .fits, .parquet or .csv")
    return fmt


class PartWriter:
    """Chunk parts under `<out>.partial/`; `done_chunks()` tells a resumed run where to start."""

    def __init__(self, out: Path, manifest: dict, overwrite: bool = False, shard: bool = False):
        self.out = Path(out)
        self.fmt = catalog_format(self.out)
        if self.out.exists() and not overwrite:
            raise UserError(f"catalog {self.out} already exists; pass --overwrite to replace it")
        check_output_folder(self.out.parent)
        self.dir = self.out.with_name(self.out.name + ".partial")
        self.dir.mkdir(exist_ok=True)
        self._lock = None
        mpath = self.dir / "manifest.json"
        if not shard:
            self._lock = locked(self.dir, "catalog")  # shards share the folder by design
            self._lock.__enter__()
            if mpath.exists() and json.loads(mpath.read_text()) != manifest:
                for p in self.dir.glob("part-*.parquet"):  # a different job: start over
                    p.unlink()
        elif mpath.exists() and json.loads(mpath.read_text()) != manifest:
            raise UserError(f"{self.dir} holds parts of a different prediction job; "
                            f"remove it or use another --out")
        tmp = mpath.with_name(f".manifest.{os.getpid()}.tmp")
        with disk_space(mpath, tmp=tmp):
            tmp.write_text(json.dumps(manifest))
            os.replace(tmp, mpath)

    def done_chunks(self) -> set[int]:
        """Parts are written under a temporary name and renamed, so any part present is whole."""
        return {int(p.stem.split("-")[1]) for p in self.dir.glob("part-*.parquet")}

    def write_chunk(self, i: int, columns: dict[str, np.ndarray]) -> None:
        tmp = self.dir / f".part-{i:06d}.tmp"
        table = pa.table(columns)
        with disk_space(self.dir / f"part-{i:06d}.parquet", needed=table.nbytes, tmp=tmp):
            pq.write_table(table, tmp)
            os.replace(tmp, self.dir / f"part-{i:06d}.parquet")

    def finish(self, n_chunks: int) -> Path:
        parts = [self.dir / f"part-{i:06d}.parquet" for i in range(n_chunks)]
        tmp = self.out.with_name(f".{self.out.name}.tmp")
        needed = sum(p.stat().st_size for p in parts)  # about the merged size
        with disk_space(self.out, needed=needed, tmp=tmp):
            self._merge(parts, tmp)
            os.replace(tmp, self.out)
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.out

    def _merge(self, parts: list[Path], tmp: Path) -> None:
        """Stream the parts into `tmp` in the catalog's format, one part in memory."""
        if self.fmt == "parquet":
            with pq.ParquetWriter(tmp, pq.read_schema(parts[0])) as w:
                for p in parts:
                    w.write_table(pq.read_table(p))
        elif self.fmt == "csv":
            with pacsv.CSVWriter(tmp, pq.read_schema(parts[0])) as w:
                for p in parts:
                    w.write_table(pq.read_table(p))
        else:
            write_fits_streaming(parts, tmp)

    def close(self) -> None:
        if getattr(self, "_stop_beat", None) is not None:
            self._stop_beat.set()
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    # ---- shards: a heartbeat per rank, so rank 0 never waits for a dead one -------------
    def _beat(self, rank: int) -> Path:
        return self.dir / f".alive-rank{rank}"

    def _done(self, rank: int) -> Path:
        return self.dir / f".done-rank{rank}"

    def start_heartbeat(self, rank: int, every: float) -> None:
        """Touch `.alive-rank<r>` every `every` s from a daemon thread until `close()`.

        A thread, not the predict loop, so a slow chunk is never taken for a dead rank; a
        killed or frozen (SIGSTOP, hung node) process stops beating either way.
        """
        import threading

        self._stop_beat = threading.Event()
        beat = self._beat(rank)

        def run():
            while True:
                try:
                    beat.touch()
                except OSError:
                    pass
                if self._stop_beat.wait(every):
                    return

        threading.Thread(target=run, name="astrotransfer-heartbeat", daemon=True).start()

    def mark_done(self, rank: int, job: str) -> None:
        """This rank's parts are all written (for the job `job`, not an earlier attempt)."""
        self._done(rank).write_text(job)

    def wait_for(self, n_chunks: int, timeout: float, world: int = 1, job: str = "",
                 stale_after: float | None = None) -> None:
        """Rank 0 waits for the other ranks' parts before merging.

        With `stale_after`, a rank that is neither done nor beating for that long (counted
        from when rank 0 began waiting, so a slow start is not a death) ends the wait at
        once with one line, instead of after `timeout`.
        """
        import time

        start_wall, deadline = time.time(), time.monotonic() + timeout
        while len(self.done_chunks()) < n_chunks:
            missing = n_chunks - len(self.done_chunks())
            if time.monotonic() > deadline:
                raise UserError(f"{missing} prediction parts never appeared in {self.dir}; "
                                f"a rank failed — run the same command again to finish")
            for r in range(1, world if stale_after else 1):
                done = self._done(r)
                if done.exists() and done.read_text() == job:
                    continue
                beat = self._beat(r)
                seen = max(start_wall, beat.stat().st_mtime if beat.exists() else 0.0)
                if time.time() - seen > stale_after:
                    raise UserError(
                        f"rank {r} of the prediction stopped answering (no heartbeat in "
                        f"{self.dir} for {stale_after:g} s; it died or hangs) with {missing} "
                        f"parts missing; the parts written are kept: launch the same command "
                        f"again to finish")
            time.sleep(0.2)


# FITS binary-table codes of the numeric column types a catalog holds.
_FITS_CODES = {"float32": "E", "float64": "D", "int16": "I", "int32": "J", "int64": "K",
               "uint8": "B"}


def _fits_layout(parts: list[Path]) -> tuple[np.dtype, list, int]:
    """(big-endian row dtype, FITS columns, total rows) for the parts' shared schema.

    Strings are fixed width in FITS, so string widths need one pass over the string
    columns of every part first; only those columns are read.
    """
    import pyarrow.compute as pc
    from astropy.io import fits

    schema = pq.read_schema(parts[0])
    nrows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    strings = [f.name for f in schema if pa.types.is_string(f.type) or
               pa.types.is_large_string(f.type)]
    width = dict.fromkeys(strings, 1)
    for p in parts:
        t = pq.read_table(p, columns=strings)
        for name in strings:
            longest = pc.max(pc.binary_length(t.column(name))).as_py()
            width[name] = max(width[name], longest or 0)
    fields, columns = [], []
    for f in schema:
        if f.name in width:
            fields.append((f.name, f"S{width[f.name]}"))
            columns.append(fits.Column(name=f.name, format=f"{width[f.name]}A"))
            continue
        try:
            kind = np.dtype(f.type.to_pandas_dtype()).name
        except (NotImplementedError, TypeError):
            kind = str(f.type)
        code = _FITS_CODES.get(kind)
        if code is None:
            raise UserError(f"catalog column {f.name} has type {f.type}, which the FITS "
                            f"writer does not support; write .parquet or .csv instead")
        fields.append((f.name, np.dtype(kind).newbyteorder(">")))
        columns.append(fits.Column(name=f.name, format=code))
    return np.dtype(fields), columns, nrows


def write_fits_streaming(parts: list[Path], path: Path) -> None:
    """Write the parts as one FITS binary table, one part in memory at a time.

    The header is written first with the final row count (NAXIS2) and the rows are
    appended part by part through astropy's StreamingHDU, which pads the last block.
    """
    from astropy.io import fits

    dtype, columns, nrows = _fits_layout(parts)
    if path.exists():
        path.unlink()
    if nrows == 0:  # StreamingHDU refuses a zero-size payload; an empty table is tiny anyway
        fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns, nrows=0)]
                     ).writeto(path)
        return
    header = fits.BinTableHDU.from_columns(columns, nrows=0).header
    header["NAXIS2"] = nrows
    with fits.StreamingHDU(path, header) as hdu:
        for p in parts:
            t = pq.read_table(p)
            rows = np.empty(t.num_rows, dtype=dtype)
            for name in dtype.names:
                values = t.column(name).to_numpy(zero_copy_only=False)
                if dtype[name].kind == "S":
                    try:
                        values = np.char.encode(values.astype(str), "ascii")
                    except UnicodeEncodeError:
                        raise UserError(f"catalog column {name} holds non-ASCII text, which "
                                        f"FITS cannot store; write .parquet or .csv "
                                        f"instead") from None
                rows[name] = values
            hdu.write(rows.view(np.uint8))
