"""Catalogs: reading any common table format, checking positions, label rules, cross-matching.

Everything is an astropy `Table` so one code path serves CSV, FITS, Parquet, VOTable and the
header-less whitespace `.tab` files of LEGUS. A problem with the whole catalog (unreadable,
a column missing) is a `UserError` naming the file and the option that fixes it; a problem
with single rows (no position, out of range, repeated id) becomes a per-row reason, so one
bad line never stops an ingest of a million objects.

Text catalogs come from spreadsheets and archives as often as from pipelines, so `read_table`
accepts what those write: a UTF-8 byte-order mark (dropped), UTF-16 with its mark (Excel's
"Unicode text"), Windows-1252 or latin-1 text (read as such, with a logged note), CRLF line
endings, quoted fields holding commas, and empty rows at the end (",,,," lines). A CSV
header naming one column twice is refused, naming the duplicates: astropy would silently
rename the second to `name_1`, so RA, a label or the id could come from the wrong column
without anyone noticing, and renaming a header cell is a one-second fix for the user.
"""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import astropy.units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table, hstack
from astropy.utils.data import get_readable_fileobj

from astrotransfer.errors import UserError

# Suffix -> astropy format. `.tab`/`.dat` are LEGUS/PHANGS-style header-less whitespace
# tables, whose columns become col1, col2, ... (1-based, as in the LEGUS documentation).
FORMATS = {".csv": "ascii.csv", ".ecsv": "ascii.ecsv", ".fits": "fits", ".fit": "fits",
           ".fts": "fits", ".parquet": "parquet", ".vot": "votable", ".xml": "votable",
           ".tab": "ascii.no_header", ".dat": "ascii.no_header", ".txt": "ascii"}
# Text encodings tried in order (a UTF-16 byte-order mark overrides them): valid UTF-8 is
# almost never anything else, and `utf-8-sig` drops the mark spreadsheets put first;
# Windows-1252 is what spreadsheets on Windows write (latin-1's printable characters and
# more); latin-1 decodes any byte sequence, so something is always read.
ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")
WRITE_FORMATS = {".csv": "ascii.csv", ".ecsv": "ascii.ecsv", ".fits": "fits",
                 ".parquet": "parquet", ".vot": "votable"}

# Column names tried, in order, when a cross-match is not told which columns hold positions.
RA_NAMES = ("ra", "RA", "RA_deg", "RAJ2000", "ra_deg", "coord_ra", "ALPHAWIN_J2000", "ALPHA_J2000")
DEC_NAMES = ("dec", "DEC", "DEC_deg", "DEJ2000", "dec_deg", "coord_dec", "DELTAWIN_J2000",
             "DELTA_J2000")

# Galaxy Zoo: class 0 elliptical, 1 spiral (same order as the gz1 labels of the images survey).
GZ_CLASSES = ["elliptical", "spiral"]
# Votes are stored as decimal fractions that float round-trips turn into 0.92599999...;
# rounding to this many decimals before comparing makes the published cuts inclusive again.
GZ_DECIMALS = 6
# LEGUS visual classes 1..4 become labels 0..3; class 0 (never inspected) is unlabelled.
LEGUS_CLASSES = ["symmetric_compact_cluster", "asymmetric_compact_cluster",
                 "compact_association", "not_a_cluster"]
LEGUS_COLUMNS = {"id": "col1", "x": "col2", "y": "col3", "ra": "col4", "dec": "col5",
                 "class": "col34"}


def _format_of(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in (".gz", ".bz2"):
        suffixes.pop()
    return FORMATS.get(suffixes[-1]) if suffixes else None


def read_table(path: Path | str, flag: str = "--catalog") -> Table:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"catalog {path} does not exist or is not a file; check {flag}")
    fmt = _format_of(path)
    if fmt is None:
        raise UserError(f"catalog {path} has an unknown format '{''.join(path.suffixes)}'; "
                        f"give a {', '.join(sorted(FORMATS))} file")
    text = fmt.startswith("ascii")
    try:
        table = _read_text(path, fmt) if text else Table.read(path, format=fmt)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"catalog {path} could not be read as {fmt} "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                        f"check the file or convert it to CSV/FITS") from None
    if text:
        table = _drop_trailing_blank_rows(table, path)
    if len(table) == 0:
        raise UserError(f"catalog {path} has no rows; give a catalog with objects in it")
    return table


def _read_text(path: Path, fmt: str) -> Table:
    """A text table decoded with the first encoding that fits, checked for repeated names.

    The file is decoded here and astropy parses the text: astropy's fast C reader does not
    take an `encoding` argument (it falls back to the pure-Python reader, ~10x slower on a
    million-row catalog), and astropy reads the whole file into one string anyway."""
    with get_readable_fileobj(str(path), encoding="binary") as f:  # .gz/.bz2 decompressed
        raw = f.read()
    encodings = ("utf-16",) if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ENCODINGS
    first_error = None
    for enc in encodings:
        try:
            text = raw.decode(enc)
            break
        except UnicodeDecodeError as exc:
            first_error = first_error or exc
    else:
        raise UserError(f"catalog {path} could not be decoded as {' or '.join(encodings)} "
                        f"({first_error}); save it as UTF-8") from None
    del raw
    if first_error is not None:
        bad = first_error.object[first_error.start:first_error.start + 1].hex()
        logging.getLogger("astrotransfer").info(
            "note: catalog %s is not UTF-8 (byte 0x%s at offset %d); read it as %s. Save it "
            "as UTF-8 if names or labels look wrong.", path, bad, first_error.start, enc)
    if fmt == "ascii.csv":
        _refuse_duplicate_names(path, text)
    if "\n" not in text and "\r" not in text:
        text += "\n"  # astropy takes a string without a line break for a file name
    return Table.read(text, format=fmt)


def _refuse_duplicate_names(path: Path, text: str) -> None:
    """The CSV header is its first non-blank line, as astropy reads it; names are stripped."""
    line = next((ln for ln in io.StringIO(text) if ln.strip()), "")
    names = [n.strip() for n in next(csv.reader([line]), [])]
    seen: dict[str, list[int]] = {}
    for i, name in enumerate(names, 1):
        seen.setdefault(name, []).append(i)
    dups = {n: cols for n, cols in seen.items() if len(cols) > 1}
    if dups:
        shown = "; ".join(f"'{n}' (columns {', '.join(map(str, c))})" for n, c in dups.items())
        raise UserError(f"catalog {path} names a column more than once: {shown}; rename them "
                        f"in the header so each column has its own name (the wrong one could "
                        f"otherwise be used silently)")


def _drop_trailing_blank_rows(table: Table, path: Path) -> Table:
    """Spreadsheets save rows they once touched as ",,,," lines at the end; those are no
    objects. Blank rows between objects are kept, so row numbers in skip reasons stay true."""
    def blank(i: int) -> bool:
        for col in table.itercols():
            v = col[i]
            if v is np.ma.masked:
                continue
            if col.dtype.kind in "US" and not str(v.decode() if isinstance(v, bytes) else v
                                                   ).strip():
                continue
            return False
        return True

    n = len(table)
    while n and blank(n - 1):
        n -= 1
    if n < len(table):
        logging.getLogger("astrotransfer").info(
            "note: ignored %d empty row(s) at the end of catalog %s", len(table) - n, path)
        table = table[:n]
    return table


def write_table(table: Table, path: Path | str) -> None:
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"cannot write {path}: unknown suffix '{path.suffix}'; "
                        f"use one of {', '.join(WRITE_FORMATS)}")
    try:
        table.write(path, format=fmt, overwrite=True)
    except Exception as exc:
        raise UserError(f"could not write {path} ({type(exc).__name__}: {exc}); "
                        f"check the folder exists and is writable") from None


def require_column(table: Table, name: str, path: Path | str, flag: str) -> None:
    if name not in table.colnames:
        shown = ", ".join(table.colnames[:12]) + (", ..." if len(table.colnames) > 12 else "")
        raise UserError(f"catalog {path} has no column '{name}' (it has: {shown}); "
                        f"name the right column with {flag}")


def _filled(col, fill):
    return np.ma.filled(np.ma.asarray(col), fill)


def column_values(col) -> np.ndarray:
    """Float values of a numeric column, NaN where masked or not numeric."""
    if col.dtype.kind in "iuf":
        return _filled(col, np.nan).astype(float)
    out = np.full(len(col), np.nan)
    for i, v in enumerate(_filled(col, "")):
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            pass
    return out


def parse_coords(ra_col, dec_col) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec in degrees; NaN where a row cannot be parsed.

    Numeric columns are degrees. Text columns may hold degrees ("150.1") or sexagesimal
    ("10:00:24.0", "10h00m24s"): sexagesimal RA is in hours, as every catalog writes it.
    """
    ra, dec = column_values(ra_col), column_values(dec_col)
    text = ra_col.dtype.kind not in "iuf" or dec_col.dtype.kind not in "iuf"
    todo = np.flatnonzero(~(np.isfinite(ra) & np.isfinite(dec))) if text else []
    if len(todo):
        ra_s = np.asarray(_filled(ra_col, ""), dtype=str)[todo]
        dec_s = np.asarray(_filled(dec_col, ""), dtype=str)[todo]
        try:
            c = SkyCoord(ra_s, dec_s, unit=(u.hourangle, u.deg))
            ra[todo], dec[todo] = c.ra.deg, c.dec.deg
        except Exception:  # some rows are bad: parse one by one to find them
            for k, i in enumerate(todo):
                try:
                    c = SkyCoord(ra_s[k], dec_s[k], unit=(u.hourangle, u.deg))
                    ra[i], dec[i] = c.ra.deg, c.dec.deg
                except Exception:
                    pass
    return ra, dec


def ids_as_str(col) -> np.ndarray:
    """Object ids as text, "" where missing; integers stay exact (SDSS objids overflow a float)."""
    mask = np.ma.getmaskarray(np.ma.asarray(col))
    values = np.ma.asarray(col).data.tolist()
    out = []
    for v, m in zip(values, mask):
        if m or (isinstance(v, float) and not np.isfinite(v)):
            out.append("")
        elif isinstance(v, float) and v == int(v):
            out.append(str(int(v)))
        else:
            out.append(v.decode() if isinstance(v, bytes) else str(v).strip())
    return np.array(out, dtype=object)


@dataclass
class Positions:
    """Validated catalog rows: `reason[i]` is None for usable rows, else why row i is skipped."""

    table: Table
    ids: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    reason: list

    @property
    def usable(self) -> np.ndarray:
        return np.array([r is None for r in self.reason], dtype=bool)


def load_positions(path: Path | str, id_col: str, ra_col: str, dec_col: str,
                   table: Table | None = None) -> Positions:
    """Read the catalog, check columns and positions; fatal only if no row is usable."""
    table = read_table(path) if table is None else table
    for name, flag in ((id_col, "--id-column"), (ra_col, "--ra-column"), (dec_col, "--dec-column")):
        require_column(table, name, path, flag)
    ids = ids_as_str(table[id_col])
    ra, dec = parse_coords(table[ra_col], table[dec_col])
    reason: list = [None] * len(table)
    first: dict[str, int] = {}
    for i in range(len(table)):
        if not ids[i]:
            reason[i] = f"no object id: column '{id_col}' is empty in catalog row {i + 1}"
        elif not (np.isfinite(ra[i]) and np.isfinite(dec[i])):
            reason[i] = f"RA/Dec unreadable: columns '{ra_col}'/'{dec_col}' hold no position"
        elif not -360.0 <= ra[i] <= 360.0:  # negative RA (-180..180 catalogs) wraps
            reason[i] = f"RA/Dec out of range: RA {ra[i]:g} deg"
        elif not -90.0 <= dec[i] <= 90.0:
            reason[i] = f"RA/Dec out of range: Dec {dec[i]:g} deg"
        elif ids[i] in first:
            reason[i] = f"duplicate id: first at catalog row {first[ids[i]] + 1}"
        else:
            first[ids[i]] = i
    pos = Positions(table, ids, ra % 360.0, dec, reason)
    if not pos.usable.any():
        raise UserError(f"catalog {path}: no row has a usable id and RA/Dec "
                        f"(first problem: {reason[0]}); check --ra-column/--dec-column "
                        f"(degrees or sexagesimal) and --id-column")
    return pos


# ---- label rules ---------------------------------------------------------------------------
def galaxy_zoo_labels(p_el, p_cs, elliptical_threshold: float = 0.926,
                      spiral_threshold: float = 0.985) -> np.ndarray:
    """0 elliptical / 1 spiral / -1 unlabelled from Galaxy Zoo vote fractions.

    Thresholds are inclusive after rounding to GZ_DECIMALS (see there). The defaults are the
    "high probability" cut of Khan et al. 2019 on debiased fractions. A galaxy passing both
    cuts (possible only with thresholds below 0.5) is ambiguous and stays unlabelled.
    """
    el = np.round(column_values(p_el), GZ_DECIMALS) >= round(elliptical_threshold, GZ_DECIMALS)
    sp = np.round(column_values(p_cs), GZ_DECIMALS) >= round(spiral_threshold, GZ_DECIMALS)
    labels = np.full(len(el), -1, dtype=np.int32)
    labels[el & ~sp] = 0
    labels[sp & ~el] = 1
    return labels


def legus_labels(visual_class) -> np.ndarray:
    """LEGUS/PHANGS visual class 1..4 -> 0..3; 0 (not classified) or anything else -> -1."""
    vc = column_values(visual_class)
    labels = np.full(len(vc), -1, dtype=np.int32)
    ok = np.isin(vc, [1.0, 2.0, 3.0, 4.0])
    labels[ok] = vc[ok].astype(np.int32) - 1
    return labels


# ---- cross-matching ------------------------------------------------------------------------
def guess_column(table: Table, names: tuple[str, ...], given: str | None, path, flag: str) -> str:
    if given:
        require_column(table, given, path, flag)
        return given
    for name in names:
        if name in table.colnames:
            return name
    raise UserError(f"catalog {path}: no position column found (tried {', '.join(names)}); "
                    f"name it with {flag}")


def crossmatch(table_a: Table, table_b: Table, radius_arcsec: float,
               ra_a: str, dec_a: str, ra_b: str, dec_b: str) -> tuple[Table, dict]:
    """Nearest-neighbour match of every A row to B within `radius_arcsec`.

    Returns the inner join (A columns, then B columns; clashing names get `_a`/`_b`) with
    `separation_arcsec` and `duplicate_match` (the B row was the match of more than one A
    row), and a summary of counts. Rows without a readable position take no part.
    """
    if not radius_arcsec > 0:
        raise UserError(f"match radius must be positive, got {radius_arcsec} arcsec; "
                        f"use e.g. --radius 1arcsec")
    ra1, de1 = parse_coords(table_a[ra_a], table_a[dec_a])
    ra2, de2 = parse_coords(table_b[ra_b], table_b[dec_b])
    ok1 = np.isfinite(ra1) & np.isfinite(de1) & (np.abs(de1) <= 90)
    ok2 = np.isfinite(ra2) & np.isfinite(de2) & (np.abs(de2) <= 90)
    for ok, side, ra, dec in ((ok1, "A", ra_a, dec_a), (ok2, "B", ra_b, dec_b)):
        if not ok.any():
            raise UserError(f"catalog {side} has no readable positions in columns "
                            f"'{ra}'/'{dec}'; pick degree or sexagesimal columns with "
                            f"--ra-{side.lower()}/--dec-{side.lower()}")
    ia, ib = np.flatnonzero(ok1), np.flatnonzero(ok2)
    ca = SkyCoord(ra1[ia] * u.deg, de1[ia] * u.deg)
    cb = SkyCoord(ra2[ib] * u.deg, de2[ib] * u.deg)
    if len(ib) == 1:  # match_to_catalog_sky needs an array catalog, not a scalar
        cb = cb.reshape((1,))
    idx, sep, _ = ca.match_to_catalog_sky(cb)
    hit = sep.arcsec <= radius_arcsec
    rows_a, rows_b = ia[hit], ib[idx[hit]]
    b_rows, b_counts = np.unique(rows_b, return_counts=True)
    dup_b = set(b_rows[b_counts > 1].tolist())
    joined = hstack([table_a[rows_a], table_b[rows_b]], table_names=["a", "b"],
                    join_type="exact")
    joined["separation_arcsec"] = sep.arcsec[hit]
    joined["duplicate_match"] = np.array([b in dup_b for b in rows_b.tolist()], dtype=bool)
    summary = {
        "n_a": len(table_a), "n_b": len(table_b), "radius_arcsec": float(radius_arcsec),
        "matched": int(hit.sum()), "unmatched_a": int(len(ia) - hit.sum()),
        "unmatched_b": int(len(ib) - len(b_rows)),
        "duplicate_b": len(dup_b), "rows_sharing_b": int(b_counts[b_counts > 1].sum()),
        "no_position_a": int((~ok1).sum()), "no_position_b": int((~ok2).sum()),
        "max_separation_arcsec": float(sep.arcsec[hit].max()) if hit.any() else float("nan"),
    }
    return joined, summary
