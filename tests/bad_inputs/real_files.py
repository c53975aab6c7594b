"""Corpus cases for the files real catalogs and image folders come in (issue 16, item 4).

Catalogs saved by spreadsheets and archives (a UTF-8 byte-order mark, CRLF line endings,
Windows-1252 text, quoted fields holding commas, ",,,," rows at the end) must simply work;
a header naming a column twice is a one-line error. Images that lie about their size (a
decompression bomb, a FITS header claiming far more data than the file holds) and catalog
ids that are paths (`../secret`) are per-object skips, judged before any pixel is decoded.

Like the rest of the corpus, every file is made here at test time; the bomb is written as a
deflate stream of repeated blocks, so making it costs ~0.3 s and no 192 MB buffer. Cases are
declared with corpus.py's builders and added to `all_cases()` there.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from corpus import (Case, Prepared, Result, Workspace, frame_damage_case, frame_set,
                    image_case, image_folder, ingest_images_argv, sdss_argv, swap,
                    write_fits_cube)

N_IMAGES = 6  # image_folder's default


# ---- catalogs ------------------------------------------------------------------------------

def _rewrite(text_fn, encoding: str = "utf-8", newline: str = "\n"):
    """A catalog edit: rows (header first) -> rows, written in `encoding` with `newline`."""
    def edit(cat: Path) -> None:
        rows = text_fn(cat.read_text().splitlines())
        cat.write_bytes(newline.join(rows).encode(encoding) + newline.encode())
    return edit


def _bom(cat: Path) -> None:
    cat.write_bytes(b"\xef\xbb\xbf" + cat.read_bytes())


def _with_note(values: list[str]):
    """Adds a `note` column holding `values` (cycled), e.g. quoted text with commas."""
    def fn(rows: list[str]) -> list[str]:
        return [rows[0] + ",note"] + [r + "," + values[i % len(values)]
                                      for i, r in enumerate(rows[1:])]
    return fn


def _class_names(rows: list[str]) -> list[str]:
    """Labels written as words with accents: they become the store's class names."""
    names = {"0": "sphéroïde", "1": "spirale – barrée"}
    out = [rows[0]]
    for r in rows[1:]:
        cells = r.split(",")
        cells[1] = names[cells[1]]
        out.append(",".join(cells))
    return out


def _expect_store(out: Path, n: int, class_names: list[str] | None = None,
                  stderr_has: str | None = None):
    def verify(res: Result) -> list[str]:
        from astrotransfer.store import CutoutStore
        if not out.exists():
            return [f"{out.name} was not written"]
        s = CutoutStore.open(out)
        probs = [] if s.n == n else [f"store holds {s.n} objects, expected {n}"]
        if s.skipped():
            probs.append(f"unexpected skips: {s.skipped()[:2]}")
        if class_names is not None and sorted(s.class_names) != sorted(class_names):
            probs.append(f"class names {s.class_names}, expected {class_names}")
        if stderr_has and stderr_has not in res.stderr:
            probs.append(f"stderr lacks {stderr_has!r}")
        return probs
    return verify


def _images_catalog_case(name: str, what: str, edit, expect: str = "ok",
                         needles: tuple[str, ...] = (), class_names=None,
                         stderr_has: str | None = None) -> Case:
    def build(ws: Workspace, d: Path) -> Prepared:
        folder = image_folder(d)
        edit(folder / "catalog.csv")
        out = d / "out.zarr"
        verify = _expect_store(out, N_IMAGES, class_names, stderr_has) if expect == "ok" \
            else None
        return Prepared(ingest_images_argv(folder, out), verify=verify)
    return Case(name, "ingest images", what, expect, build, needles)


def _sdss_catalog_case(name: str, what: str, edit, expect: str = "ok",
                       needles: tuple[str, ...] = ()) -> Case:
    def build(ws: Workspace, d: Path) -> Prepared:
        frames, cat = frame_set(d)
        edit(cat)
        out = d / "out.zarr"
        verify = _expect_store(out, 4) if expect == "ok" else None
        return Prepared(sdss_argv(frames, cat, out), verify=verify)
    return Case(name, "ingest sdss", what, expect, build, needles)


def _crossmatch_case(name: str, what: str, edit) -> Case:
    def build(ws: Workspace, d: Path) -> Prepared:
        frames, cat = frame_set(d)
        edit(cat)
        out = d / "matched.csv"

        def verify(res: Result) -> list[str]:
            import pandas as pd
            if not out.exists():
                return ["matched.csv was not written"]
            t = pd.read_csv(out)
            return [] if len(t) == 4 else [f"{len(t)} matches, expected 4 (self-match)"]
        return Prepared(["crossmatch", cat, cat, "--out", out], verify=verify)
    return Case(name, "crossmatch", what, "ok", build)


def _duplicate_column(rows: list[str]) -> list[str]:
    return [rows[0] + ",ra"] + [r + ",0.0" for r in rows[1:]]


def catalog_cases() -> list[Case]:
    crlf = _rewrite(lambda r: r, newline="\r\n")
    trailing = _rewrite(lambda r: r + ["", ",,,", ",,,", "   ", ""])
    quoted = _rewrite(_with_note(['"Arp 273, NE"', '"merger, ""tidal"" tail"', 'plain']))
    cp1252 = _rewrite(_class_names, encoding="cp1252")
    return [
        _images_catalog_case("catalog-utf8-bom", "a CSV starting with a UTF-8 byte-order mark "
                             "(spreadsheet export)", _bom),
        _images_catalog_case("catalog-crlf", "a CSV with Windows (CRLF) line endings", crlf),
        _images_catalog_case("catalog-cp1252", "a Windows-1252 CSV whose labels have accents "
                             "and an en dash", cp1252,
                             class_names=["sphéroïde", "spirale – barrée"],
                             stderr_has="is not UTF-8"),
        _images_catalog_case("catalog-quoted-commas", "quoted fields holding commas and "
                             "doubled quotes", quoted),
        _images_catalog_case("catalog-trailing-empty-rows", "blank lines and ',,,' rows after "
                             "the last object", trailing),
        _images_catalog_case("catalog-duplicate-columns", "a header naming column 'ra' twice",
                             _rewrite(_duplicate_column), "error",
                             ("catalog.csv", "'ra' (columns 3, 5)", "rename")),
        _sdss_catalog_case("catalog-utf8-bom", "a CSV starting with a UTF-8 byte-order mark",
                           _bom),
        _sdss_catalog_case("catalog-cp1252-crlf", "a Windows-1252 CSV with CRLF endings and "
                           "an accented column name",
                           _rewrite(lambda r: [r[0] + ",décl_note"] + [x + ",é" for x in r[1:]],
                                    encoding="cp1252", newline="\r\n")),
        _sdss_catalog_case("catalog-duplicate-columns", "a header naming column 'ra' twice",
                           _rewrite(_duplicate_column), "error",
                           ("catalog.csv", "'ra' (columns 2, 4)", "rename")),
        _crossmatch_case("catalog-utf8-bom", "a CSV starting with a UTF-8 byte-order mark",
                         _bom),
    ]


# ---- images that lie about their size -------------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_bomb(path: Path, width: int, height: int, complete: bool = True) -> Path:
    """A valid RGB PNG of width x height black pixels, a few hundred kB on disk.

    Each block of 64 zero rows is compressed once and flushed with Z_FULL_FLUSH, which
    makes it independent of what came before, so the same bytes repeated are a valid
    deflate stream. `complete=False` writes only the header and one block: enough for a
    file over Pillow's own limit, which is refused before any data is read.
    """
    rows = 64
    block = b"\x00" * ((1 + 3 * width) * rows)
    c = zlib.compressobj(9)
    head = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    if complete:
        body = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
        adler = 1
        for _ in range(height // rows):
            adler = zlib.adler32(block, adler)
        idat = head + body * (height // rows - 1) + b"\x03\x00" + struct.pack(">I", adler)
    else:
        idat = head
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))
    return path


BOMB_SIDE = 8000  # 64 M px: under Pillow's 89 M-px warning, 1.7 GB as float32 RGB here


def _bomb(folder: Path) -> str:
    png_bomb(folder / "obj002.png", BOMB_SIDE, BOMB_SIDE)
    return "obj002"


def _over_pillow_limit(folder: Path) -> str:
    png_bomb(folder / "obj004.png", 20000, 10000, complete=False)  # 200 M px
    return "obj004"


def _in_pillow_warning_range(folder: Path) -> str:
    """100 M px: Pillow only warns (on stderr) between 89 M and 179 M px."""
    png_bomb(folder / "obj005.png", 10000, 10000, complete=False)
    return "obj005"


def _png_truncated(folder: Path) -> str:
    p = folder / "obj001.png"
    from PIL import Image
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return "obj001"


def _fits_claiming(shape: tuple[int, ...], suffix: str = ".fits"):
    """A FITS cutout holding a 3x24x24 cube whose header claims `shape` (NAXIS3, 2, 1)."""
    def damage(folder: Path) -> str:
        from astropy.io import fits
        p = swap(folder, "obj003", ".fits")
        write_fits_cube(p, np.random.default_rng(0).random((3, 24, 24)).astype(np.float32))
        raw = p.read_bytes()
        header = fits.Header.fromstring(raw[:2880])
        for k, n in zip(("NAXIS3", "NAXIS2", "NAXIS1"), shape):
            header[k] = n
        data = header.tostring().encode() + raw[2880:]
        if suffix == ".fits.gz":
            p.unlink()
            p = p.with_name("obj003.fits.gz")
            data = gzip.compress(data, mtime=0)
        p.write_bytes(data)
        return "obj003"
    return damage


def _frame_claiming(suffix: str):
    """An SDSS r frame whose header claims 100000 x 100000 pixels (40 GB) of data."""
    def damage(p: Path) -> None:
        from astropy.io import fits
        raw = p.read_bytes()
        header = fits.Header.fromstring(raw[:2880])
        header["NAXIS1"] = header["NAXIS2"] = 100000
        data = header.tostring().encode() + raw[2880:]
        if suffix == ".gz":
            p.unlink()
            p, data = p.with_name(p.name + ".gz"), gzip.compress(data, mtime=0)
        p.write_bytes(data)
    return damage


def image_cases() -> list[Case]:
    return [
        image_case("image-decompression-bomb", f"a PNG of 190 kB declaring {BOMB_SIDE}x"
                    f"{BOMB_SIDE} pixels (192 MB decoded, 1.2 GB peak RSS before the guard)",
                    _bomb, "image too large"),
        image_case("image-over-pillow-limit", "a PNG declaring 20000x10000 pixels (over "
                    "Pillow's own bomb limit)", _over_pillow_limit, "image too large"),
        image_case("image-pillow-warning-range", "a PNG declaring 10000x10000 pixels, "
                    "where Pillow only warns", _in_pillow_warning_range, "image too large"),
        image_case("png-truncated", "a PNG cut off mid-file", _png_truncated,
                    "corrupt image"),
        image_case("fits-claims-more-data", "a FITS cutout whose header claims 3x2000x2000 "
                    "pixels, the file holds 3x24x24", _fits_claiming((3, 2000, 2000)),
                    "corrupt image"),
        image_case("fits-claims-huge", "a FITS cutout whose header claims 3x60000x60000 "
                    "pixels (43 GB)", _fits_claiming((3, 60000, 60000)), "image too large"),
        image_case("fits-gz-claims-huge", "a gzipped FITS cutout whose header claims "
                    "3x60000x60000 pixels", _fits_claiming((3, 60000, 60000), ".fits.gz"),
                    "image too large"),
        frame_damage_case("frame-claims-more-data", "one field's r frame whose header claims "
                    "100000x100000 pixels", _frame_claiming(""),
                    "frame frame-r-000756-1-0207.fits unreadable"),
        frame_damage_case("frame-gz-claims-more-data", "one field's gzipped r frame whose header "
                    "claims 100000x100000 pixels", _frame_claiming(".gz"),
                    "frame frame-r-000756-1-0207.fits.gz unreadable"),
    ]


# ---- ids that are paths ---------------------------------------------------------------------

def _id_path_case(name: str, what: str, make_id) -> Case:
    """A catalog row whose id points at a real, valid image outside --images: reading it
    would ingest it, so the skip proves nothing outside the folder was read."""
    def build(ws: Workspace, d: Path) -> Prepared:
        from corpus import _rgb_png
        folder = image_folder(d)
        _rgb_png(d / "secret.png", 24, 9)
        bad = make_id(d)
        with (folder / "catalog.csv").open("a") as f:
            f.write(f"{bad},1,150.9,2.9\n")
        out = d / "out.zarr"

        def verify(res: Result) -> list[str]:
            from astrotransfer.store import CutoutStore
            ids = set(map(str, CutoutStore.open(out).column("object_id")))
            return [f"{bad} was ingested from outside --images"] if bad in ids else []
        return Prepared(ingest_images_argv(folder, out), store=out, skip_id=bad, verify=verify)
    return Case(name, "ingest images", what, "skip", build, ("unsafe id",))


def id_cases() -> list[Case]:
    return [
        _id_path_case("catalog-id-dotdot", "an id '../secret' naming a PNG beside the images "
                      "folder", lambda d: "../secret"),
        # the command runs in the case folder, so this absolute path names d/secret.png
        # while reading the same in every run (docs/bad_inputs.md shows it unshortened)
        _id_path_case("catalog-id-absolute-path", "an id that is the absolute path of a PNG "
                      "outside the images folder", lambda d: "/proc/self/cwd/secret"),
    ]


def real_file_cases() -> list[Case]:
    return catalog_cases() + image_cases() + id_cases()
