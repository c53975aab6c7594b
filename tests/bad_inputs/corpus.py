"""The bad-input corpus: damaged inputs built at run time, and the contract each must meet.

Nothing binary is committed. Every case starts from valid inputs made here (a tiny simulated
store, a one-epoch run of timm's `test_efficientnet`, PNG/JPEG/FITS stamps and SDSS-named
FITS frames written with PIL and astropy), copies them into its own folder, damages them,
and runs one CLI command on them. A case is one (input, command) pair, so an input that
several commands take (a store, a run directory) appears once per command.

The contract (`check`), per expected outcome:
  error  non-zero exit; exactly one line on stderr, starting "error:", naming the file or
         object (`needles`) and what to do; no traceback; nothing written or changed in the
         case folder (a before/after snapshot of every file's size and mtime must agree).
  skip   a per-object problem in a batch job: exit 0, the summary counts the skip, the store's
         skipped/ arrays record the object with its reason; the same command with `--strict`
         is a separate `error` case naming the object.
  ok     input that must be handled, not refused (rows past `n_committed`): exit 0 and the
         case's own checks (readers see only committed rows, no duplicates).
Every outcome: no `Traceback` on stderr and no temporary (`.partial`, `.tmp`) output left.

Unwritable output folders: the tests run as root, for whom `chmod` blocks nothing and a
read-only bind mount needs privileges a test should not take. A path *under a regular file*
(`<file>/out.csv`) cannot be created by anyone, root included, so that stands for an
unwritable folder.

Runners. `SubprocessRunner` runs `python -m astrotransfer.cli` exactly as a user would.
`ForkRunner` forks each command from a forkserver that has already imported torch, timm,
astropy and the plugins (but built nothing, ran no torch op and read no environment), then
calls `astrotransfer.cli.main(argv)` in the child with stdout/stderr on files: the same
code path from `main()` on, in a separate process, at a quarter of the start-up cost.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TINY = "test_efficientnet"
TRAIN_FAST = ["--backbone", TINY, "--pretrained", "none", "--epochs", "1", "--batch-size", "16",
              "--device", "cpu"]
BASE_ENV = {"HF_HUB_OFFLINE": "1", "COLUMNS": "400"}
N_SIM, SIM_SIZE = 40, 32

# ------------------------------------------------------------------------------- running


@dataclass
class Result:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    seconds: float


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **BASE_ENV, **extra}


class SubprocessRunner:
    """`python -m astrotransfer.cli ...`: exactly what a user runs."""

    name = "subprocess"

    def __call__(self, argv: list[str], env: dict[str, str], cwd: Path,
                 timeout: float = 600) -> Result:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "astrotransfer.cli", *argv],
                              capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              env=_env(env))
        return Result(argv, proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - t0)

    def close(self) -> None:
        pass


PRELOAD = ["torch", "timm", "zarr", "astropy.io.fits", "astropy.table", "astropy.wcs",
           "reproject", "pandas", "pyarrow.parquet", "PIL.Image", "typer", "rich",
           "astrotransfer.cli", "astrotransfer.surveys", "astrotransfer.plugins.backbones",
           "astrotransfer.plugins.adapters", "astrotransfer.plugins.trainers",
           "astrotransfer.plugins.crossmatch", "astrotransfer.plugins.distributed",
           "astrotransfer.plugins.transfer_commands", "astrotransfer.plugins.analysis",
           "astrotransfer.engine.training.single_run", "astrotransfer.engine.inference.catalog",
           "astrotransfer.engine.evaluation.evaluate"]


def _forked_main(argv: list[str], out: str, err: str, env: dict[str, str], cwd: str) -> None:
    """Runs in a child of the forkserver: the CLI's `main` with its output on files."""
    fo = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    fe = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fo, 1)
    os.dup2(fe, 2)
    os.environ.clear()
    os.environ.update(env)
    if env.get("OMP_NUM_THREADS", "").isdigit():  # torch read it at import, in the server
        import torch
        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    os.chdir(cwd)
    sys.argv = ["astrotransfer", *argv]
    code = 1
    try:
        from astrotransfer.cli import main
        code = main(argv)
    except SystemExit as exc:  # what the interpreter would do with it
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def fork_cli(argv: list[str], env: dict[str, str], cwd: Path | str, io_dir: Path,
             timeout: float = 600) -> tuple[int | None, str, str]:
    """`astrotransfer ARGV` in a fresh child of the preloaded forkserver, with exactly `env`.

    Returns (exit code, stdout, stderr); the exit code is None when the command was still
    running after `timeout` s (it is killed then). Output goes through files in `io_dir`.
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    out, err = Path(io_dir) / "stdout", Path(io_dir) / "stderr"
    p = ctx.Process(target=_forked_main, args=(list(argv), str(out), str(err), env, str(cwd)))
    p.start()
    p.join(timeout)
    timed_out = p.is_alive()
    if timed_out:
        p.kill()
        p.join()
    read = (lambda f: f.read_text(errors="replace") if f.exists() else "")
    return (None if timed_out else p.exitcode), read(out), read(err)


class ForkRunner:
    """Each command in a fresh child of a forkserver that has the heavy imports done."""

    name = "forkserver"

    def __init__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="bad-inputs-io-"))

    def __call__(self, argv: list[str], env: dict[str, str], cwd: Path,
                 timeout: float = 600) -> Result:
        t0 = time.perf_counter()
        code, stdout, stderr = fork_cli(argv, _env(env), cwd, self.tmp, timeout)
        return Result(argv, code if code is not None else -9, stdout, stderr,
                      time.perf_counter() - t0)

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def make_runner(name: str | None = None):
    name = name or os.environ.get("ASTROTRANSFER_CORPUS_RUNNER", "fork")
    return SubprocessRunner() if name.startswith("sub") else ForkRunner()


# ------------------------------------------------------------------------------- valid inputs


def sim_store(path: Path, instrument: str = "sdss", n: int = N_SIM, size: int = SIM_SIZE,
              seed: int = 0) -> Path:
    from astrotransfer.ingestion import run_ingest
    from astrotransfer.registry import get_registry

    source = get_registry().get("survey", "sim").open(instrument=instrument, n=n, seed=seed,
                                                       size=size)
    run_ingest(source, path, split_fractions=(0.6, 0.2, 0.2))
    return path


class Workspace:
    """Valid inputs built once (lazily) under `base`; cases copy them before damaging."""

    def __init__(self, base: Path):
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)

    @cached_property
    def store(self) -> Path:
        path = self.base / "sdss.zarr"
        return path if path.exists() else sim_store(path)

    @cached_property
    def first_id(self) -> str:
        from astrotransfer.store import CutoutStore
        return str(CutoutStore.open(self.store).column("object_id")[0])

    @cached_property
    def run(self) -> Path:
        from astrotransfer.config import TrainConfig
        from astrotransfer.engine.training.dispatch import train

        out = self.base / "run"
        if (out / "best.pt").exists():
            return out
        train(TrainConfig(source=str(self.store), out=str(out), backbone=TINY,
                          pretrained="none", epochs=1, batch_size=16, seed=0, device="cpu"))
        return out

    def copy_store(self, dest: Path) -> Path:
        shutil.copytree(self.store, dest)
        return dest

    def copy_run(self, dest: Path) -> Path:
        shutil.copytree(self.run, dest)
        return dest


# ------------------------------------------------------------------------------- cases


@dataclass
class Prepared:
    """A built case: the command line and what to verify beyond the contract."""

    argv: list
    env: dict = field(default_factory=dict)
    store: Path | None = None  # skip cases: the store whose skipped/ arrays record the skip
    skip_id: str | None = None  # skip cases: the object that must be skipped
    verify: Callable[[Result], list[str]] | None = None  # returns problems; [] when fine


@dataclass(frozen=True)
class Case:
    name: str  # the bad input
    command: str  # the command it is given to
    what: str  # the bad input in words
    expect: str  # error | skip | ok
    build: Callable[[Workspace, Path], Prepared]
    needles: tuple[str, ...] = ()  # error: in the message; skip: the reason's start

    @property
    def id(self) -> str:
        return f"{self.name}|{self.command}"


def _rgb_png(path: Path, size: int, seed: int) -> None:
    from PIL import Image
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size / 2
    blob = np.exp(-(xx**2 + (yy * (1 + seed % 3)) ** 2) / 40.0)
    img = np.clip(blob[..., None] * 200 + rng.normal(20, 5, (size, size, 3)), 0, 255)
    Image.fromarray(img.astype(np.uint8)).save(path)


def image_folder(d: Path, n: int = 6, size: int = 24) -> Path:
    """obj000.png ... and catalog.csv (objid, klass, ra, dec)."""
    folder = d / "imgs"
    folder.mkdir(parents=True)
    rows = ["objid,klass,ra,dec"]
    for i in range(n):
        _rgb_png(folder / f"obj{i:03d}.png", size, i)
        rows.append(f"obj{i:03d},{i % 2},{150 + i * 0.01:.5f},{2 + i * 0.01:.5f}")
    (folder / "catalog.csv").write_text("\n".join(rows) + "\n")
    return folder


def ingest_images_argv(folder: Path, out: Path, catalog: Path | None = None) -> list:
    return ["ingest", "images", "--images", folder, "--catalog", catalog or folder / "catalog.csv",
            "--label-column", "klass", "--size", "16", "--out", out]


def write_fits_cube(path: Path, data: np.ndarray | None) -> None:
    from astropy.io import fits
    fits.HDUList([fits.PrimaryHDU(data)]).writeto(path, overwrite=True)


def _cube(size: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((3, size, size)).astype(np.float32)


def image_case(name: str, what: str, damage: Callable[[Path], str], reason: str) -> Case:
    """An images-survey input where one object is bad: a skip (and its --strict error)."""
    def build(ws: Workspace, d: Path) -> Prepared:
        folder = image_folder(d)
        bad = damage(folder)
        out = d / "out.zarr"
        return Prepared(ingest_images_argv(folder, out), store=out, skip_id=bad)
    return Case(name, "ingest images", what, "skip", build, (reason,))


def swap(folder: Path, oid: str, suffix: str) -> Path:
    (folder / f"{oid}.png").unlink()
    return folder / f"{oid}{suffix}"


def _fits_truncated(folder: Path) -> str:
    p = swap(folder, "obj002", ".fits")
    write_fits_cube(p, _cube())
    p.write_bytes(p.read_bytes()[:4000])  # header and a fraction of the data unit
    return "obj002"


def _fits_empty(folder: Path) -> str:
    write_fits_cube(swap(folder, "obj002", ".fits"), None)
    return "obj002"


def _fits_with(value: float) -> Callable[[Path], str]:
    def damage(folder: Path) -> str:
        cube = _cube()
        cube[1, 10:14, 10:14] = value
        write_fits_cube(swap(folder, "obj003", ".fits"), cube)
        return "obj003"
    return damage


def _jpeg_truncated(folder: Path) -> str:
    from PIL import Image
    p = swap(folder, "obj001", ".jpeg")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(p, quality=95)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return "obj001"


def _zero_bytes(folder: Path) -> str:
    (folder / "obj004.png").write_bytes(b"")
    return "obj004"


def _grey(folder: Path) -> str:
    from PIL import Image
    Image.fromarray(np.full((24, 24), 120, np.uint8), mode="L").save(folder / "obj005.png")
    return "obj005"


def _catalog_edit(rows_fn: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        cat = folder / "catalog.csv"
        cat.write_text("\n".join(rows_fn(cat.read_text().splitlines())) + "\n")
    return edit


def _catalog_skip_case(name: str, what: str, rows_fn, bad: str, reason: str) -> Case:
    def build(ws: Workspace, d: Path) -> Prepared:
        folder = image_folder(d)
        _catalog_edit(rows_fn)(folder)
        out = d / "out.zarr"
        return Prepared(ingest_images_argv(folder, out), store=out, skip_id=bad)
    return Case(name, "ingest images", what, "skip", build, (reason,))


def _catalog_error_case(name: str, what: str, make: Callable[[Path], Path],
                        needles: tuple[str, ...]) -> Case:
    def build(ws: Workspace, d: Path) -> Prepared:
        folder = image_folder(d)
        return Prepared(ingest_images_argv(folder, d / "out.zarr", make(folder)))
    return Case(name, "ingest images", what, "error", build, needles)


def _set_row(i: int, col: int, value: str):
    def fn(rows: list[str]) -> list[str]:
        cells = rows[i + 1].split(",")
        cells[col] = value
        rows[i + 1] = ",".join(cells)
        return rows
    return fn


def _header_only(folder: Path) -> Path:
    p = folder / "empty.csv"
    p.write_text("objid,klass,ra,dec\n")
    return p


def _zero_byte_catalog(folder: Path) -> Path:
    p = folder / "zero.csv"
    p.write_bytes(b"")
    return p


def _xlsx_catalog(folder: Path) -> Path:
    p = folder / "catalog.xlsx"
    p.write_bytes((folder / "catalog.csv").read_bytes())
    return p


def _absent_ids(folder: Path) -> Path:
    p = folder / "other.csv"
    p.write_text("objid,klass,ra,dec\nnope1,0,150,2\nnope2,1,150.1,2\n")
    return p


def image_cases() -> list[Case]:
    return [
        image_case("fits-truncated", "a FITS cutout cut off inside its data unit",
                    _fits_truncated, "corrupt image"),
        image_case("fits-empty-data", "a FITS cutout whose HDU has no data unit",
                    _fits_empty, "empty FITS"),
        image_case("fits-nan-pixels", "a FITS cutout with NaN pixels", _fits_with(np.nan),
                    "non-finite pixels"),
        image_case("fits-inf-pixels", "a FITS cutout with +inf pixels", _fits_with(np.inf),
                    "non-finite pixels"),
        image_case("jpeg-truncated", "a JPEG cut off mid-file", _jpeg_truncated,
                    "corrupt image"),
        image_case("image-zero-bytes", "an image file of zero bytes", _zero_bytes,
                    "corrupt image"),
        image_case("image-wrong-bands", "a 1-band (greyscale) PNG among RGB ones", _grey,
                    "wrong band count"),
        _catalog_skip_case("catalog-duplicate-ids", "a catalog listing one id twice",
                           lambda r: r + [r[3]], "obj002", "duplicate id in catalog"),
        _catalog_skip_case("catalog-id-absent", "a catalog id with no image in the folder",
                           lambda r: r + ["obj999,0,150.5,2.5"], "obj999", "missing file"),
        _catalog_skip_case("catalog-ra-out-of-range", "a catalog row with RA 400 deg",
                           _set_row(2, 2, "400.0"), "obj002", "RA/Dec out of range"),
        _catalog_skip_case("catalog-dec-out-of-range", "a catalog row with Dec -95 deg",
                           _set_row(3, 3, "-95"), "obj003", "RA/Dec out of range"),
        _catalog_skip_case("catalog-coords-non-numeric", "a catalog row with RA 'abc'",
                           _set_row(1, 2, "abc"), "obj001", "RA/Dec unreadable"),
        _catalog_error_case("catalog-empty", "a catalog with a header and no rows",
                            _header_only, ("empty.csv", "no rows")),
        _catalog_error_case("catalog-zero-bytes", "a catalog file of zero bytes",
                            _zero_byte_catalog, ("zero.csv",)),
        _catalog_error_case("catalog-unknown-format", "a catalog named .xlsx", _xlsx_catalog,
                            ("catalog.xlsx", "unknown format")),
        _catalog_error_case("catalog-ids-all-absent", "a catalog none of whose ids has an image",
                            _absent_ids, ("imgs", "--id-column")),
    ]


# ---- FITS frames (the sdss survey: frames with a WCS, cut by RA/Dec) ----------------------

FIELDS = {"0206": (150.0, 2.0), "0207": (150.2, 2.0)}
FRAME_PX = 96
SDSS_SCALE = 0.396


def _frame_wcs(ra0: float, dec0: float):
    from astropy.wcs import WCS
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [(FRAME_PX + 1) / 2, (FRAME_PX + 1) / 2]
    w.wcs.cdelt = [-SDSS_SCALE / 3600, SDSS_SCALE / 3600]
    return w


def frame_set(d: Path) -> tuple[Path, Path]:
    """Two SDSS fields x g,r,i frames with two sources each, and catalog.csv (objid, ra, dec)."""
    from astropy.io import fits
    frames = d / "frames"
    frames.mkdir(parents=True)
    rows = ["objid,ra,dec"]
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:FRAME_PX, :FRAME_PX]
    for field_id, (ra0, dec0) in FIELDS.items():
        w = _frame_wcs(ra0, dec0)
        objs = [(ra0 + dx * SDSS_SCALE / 3600, dec0 + dy * SDSS_SCALE / 3600)
                for dx, dy in ((-15, -10), (15, 12))]
        for k, (ra, dec) in enumerate(objs):
            rows.append(f"f{field_id}-{k},{ra:.7f},{dec:.7f}")
        for band in "gri":
            img = rng.normal(0, 0.01, (FRAME_PX, FRAME_PX))
            for ra, dec in objs:
                x, y = w.world_to_pixel_values(ra, dec)
                img += 5 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0)
            fits.PrimaryHDU(img.astype(np.float32), w.to_header()).writeto(
                frames / f"frame-{band}-000756-1-{field_id}.fits")
    cat = d / "catalog.csv"
    cat.write_text("\n".join(rows) + "\n")
    return frames, cat


def sdss_argv(frames: Path, catalog: Path, out: Path) -> list:
    return ["ingest", "sdss", "--frames", frames, "--catalog", catalog, "--size", "16",
            "--out", out]


def frame_damage_case(name: str, what: str, damage: Callable[[Path], None],
                       reason: str) -> Case:
    def build(ws: Workspace, d: Path) -> Prepared:
        frames, cat = frame_set(d)
        damage(frames / "frame-r-000756-1-0207.fits")
        out = d / "out.zarr"
        return Prepared(sdss_argv(frames, cat, out), store=out, skip_id="f0207-0")
    return Case(name, "ingest sdss", what, "skip", build, (reason,))


def _truncate_frame(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: 2880 + 9000])


def _strip_wcs(p: Path) -> None:
    from astropy.io import fits
    data = fits.getdata(p)
    fits.PrimaryHDU(data).writeto(p, overwrite=True)


def _empty_frame(p: Path) -> None:
    from astropy.io import fits
    header = fits.getheader(p)
    hdu = fits.PrimaryHDU()
    for k in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CDELT1", "CDELT2"):
        hdu.header[k] = header[k]
    hdu.writeto(p, overwrite=True)


def _nan_frame(p: Path) -> None:
    from astropy.io import fits
    with fits.open(p, mode="update") as hdul:
        hdul[0].data[:] = np.nan


def _all_frames(damage: Callable[[Path], None]) -> Callable[[Path, Path], Path]:
    def fn(frames: Path, cat: Path) -> Path:
        for p in frames.glob("*.fits"):
            damage(p)
        return cat
    return fn


def _sdss_catalog(text: str | None, name: str = "catalog.csv"):
    def fn(frames: Path, cat: Path) -> Path:
        p = cat.with_name(name)
        if text is None:
            p.write_bytes(cat.read_bytes())
        else:
            p.write_text(text)
        return p
    return fn


def _sdss_catalog_rows(edit: Callable[[list[str]], list[str]]):
    def fn(frames: Path, cat: Path) -> Path:
        cat.write_text("\n".join(edit(cat.read_text().splitlines())) + "\n")
        return cat
    return fn


def _sdss_case(name: str, what: str, expect: str, make: Callable[[Path, Path], Path],
               needles: tuple[str, ...], skip_id: str | None = None) -> Case:
    def build(ws: Workspace, d: Path) -> Prepared:
        frames, cat = frame_set(d)
        out = d / "out.zarr"
        return Prepared(sdss_argv(frames, make(frames, cat), out), store=out, skip_id=skip_id)
    return Case(name, "ingest sdss", what, expect, build, needles)


def frame_cases() -> list[Case]:
    return [
        frame_damage_case("frame-truncated", "one field's r frame cut off inside its data",
                           _truncate_frame, "frame frame-r-000756-1-0207.fits unreadable"),
        frame_damage_case("frame-no-wcs", "one field's r frame without WCS keywords",
                           _strip_wcs, "no coverage"),
        frame_damage_case("frame-empty-data", "one field's r frame with no data unit",
                           _empty_frame, "no coverage"),
        frame_damage_case("frame-nan-pixels", "one field's r frame all NaN", _nan_frame,
                           "mostly blank"),
        _sdss_case("frames-all-no-wcs", "no frame has a WCS", "error",
                   _all_frames(_strip_wcs), ("frames", "no celestial WCS", "--frames")),
        _sdss_case("frames-all-truncated", "every frame truncated to its header", "error",
                   _all_frames(lambda p: p.write_bytes(p.read_bytes()[:2880])),
                   ("frame-", "--frames")),
        _sdss_case("catalog-empty", "a catalog with a header and no rows", "error",
                   _sdss_catalog("objid,ra,dec\n", "empty.csv"), ("empty.csv", "no rows")),
        _sdss_case("catalog-unknown-format", "a catalog named .xlsx", "error",
                   _sdss_catalog(None, "catalog.xlsx"), ("catalog.xlsx", "unknown format")),
        _sdss_case("catalog-ra-out-of-range", "a catalog row with RA 400 deg", "skip",
                   _sdss_catalog_rows(_set_row(0, 1, "400")), ("RA/Dec out of range",),
                   "f0206-0"),
        _sdss_case("catalog-coords-non-numeric", "a catalog row with Dec 'north'", "skip",
                   _sdss_catalog_rows(_set_row(1, 2, "north")), ("RA/Dec unreadable",),
                   "f0206-1"),
        _sdss_case("catalog-duplicate-ids", "a catalog listing one id twice", "skip",
                   _sdss_catalog_rows(lambda r: r + [r[1]]), ("duplicate id",), "f0206-0"),
    ]


# ---- names ---------------------------------------------------------------------------------

def name_cases() -> list[Case]:
    def ingest(ws: Workspace, d: Path) -> Prepared:
        return Prepared(["ingest", "nosuchsurvey", "--out", d / "out.zarr"])

    def train_with(flag: str, value: str):
        def build(ws: Workspace, d: Path) -> Prepared:
            argv = ["train", "--source", ws.store, "--out", d / "run", *TRAIN_FAST]
            i = argv.index(flag) if flag in argv else None
            if i is None:
                argv += [flag, value]
            else:
                argv[i + 1] = value
            return Prepared(argv)
        return build

    def run_backbone(command: str):
        def build(ws: Workspace, d: Path) -> Prepared:
            run = ws.copy_run(d / "run")
            info = json.loads((run / "run.json").read_text())
            info["backbone"] = "nosuch_net"
            (run / "run.json").write_text(json.dumps(info))
            return Prepared(run_argv(command, ws, d, run))
        return build

    cases = [
        Case("unknown-survey", "ingest", "survey name nosuchsurvey", "error", ingest,
             ("nosuchsurvey", "images", "plugins list")),
        Case("unknown-backbone", "train", "--backbone nosuch_net", "error",
             train_with("--backbone", "nosuch_net"), ("nosuch_net",)),
        Case("unknown-adapter", "train", "--adapt nosuch", "error",
             train_with("--adapt", "nosuch"), ("adapter 'nosuch'", "finetune")),
        Case("unknown-trainer", "train", "--trainer nosuch", "error",
             train_with("--trainer", "nosuch"), ("trainer 'nosuch'", "standard")),
    ]
    for command in ("evaluate", "predict"):
        cases.append(Case("run-unknown-backbone", command,
                          "a run whose backbone is no longer provided", "error",
                          run_backbone(command), ("nosuch_net",)))
    return cases


# ---- stores --------------------------------------------------------------------------------

def _zarr(path: Path):
    import zarr
    return zarr.open_group(str(path), mode="r+")


def _newer_version(store: Path) -> None:
    _zarr(store).attrs["store_version"] = 99


def _missing_array(store: Path) -> None:
    shutil.rmtree(store / "images")


def _nan_store(store: Path) -> None:
    g = _zarr(store)
    img = np.asarray(g["images"][:3])
    img[1, 0, 5, 5] = np.nan
    g["images"][:3] = img


def add_uncommitted_rows(store: Path, k: int = 8) -> None:
    """Rows written past n_committed, as a kill between writing a batch and committing it
    leaves them: duplicate ids, NaN pixels, bogus splits; plus an uncommitted skip record."""
    g = _zarr(store)
    n = int(g.attrs["n_committed"])
    img = g["images"]
    img.resize((n + k, *img.shape[1:]))
    img[n:] = np.nan
    values = {"object_id": np.array([str(g["object_id"][0])] * k),
              "ra": np.full(k, 999.0), "dec": np.full(k, 999.0),
              "label": np.full(k, 7, np.int32), "split": np.array(["bogus"] * k),
              "flags": np.full(k, -1, np.int32)}
    for name, v in values.items():
        g[name].resize((n + k,))
        g[name][n:] = v
    s = int(g.attrs.get("n_skipped", 0))
    for name, v in (("object_id", str(g["object_id"][1])), ("reason", "uncommitted skip")):
        arr = g[f"skipped/{name}"]
        arr.resize((s + 1,))
        arr[s:] = np.array([v])


def store_argv(command: str, ws: Workspace, d: Path, store: Path) -> list:
    run = lambda: ws.copy_run(d / "run")  # noqa: E731 - built only by the commands needing it
    return {
        "store check": lambda: ["store", "check", store],
        "train --source": lambda: ["train", "--source", store, "--out", d / "newrun",
                                   *TRAIN_FAST],
        "train --target": lambda: ["train", "--source", ws.store, "--target", store,
                                   "--out", d / "newrun", *TRAIN_FAST],
        "evaluate --data": lambda: ["evaluate", run(), "--data", store, "--split", "all"],
        "predict --data": lambda: ["predict", run(), "--data", store, "--out", d / "cat.csv"],
        "embed --data": lambda: ["embed", run(), "--data", store],
        "similar --data": lambda: ["similar", run(), "--data", store, "--id", ws.first_id],
        "study bands --data": lambda: ["study", "bands", run(), "--data", store, "--split",
                                       "all"],
        "rank --target": lambda: ["rank", run(), "--target", store],
    }[command]()


STORE_COMMANDS = ("store check", "train --source", "train --target", "evaluate --data",
                  "predict --data", "embed --data", "similar --data", "study bands --data",
                  "rank --target")


def _store_case(name: str, what: str, damage: Callable[[Path], None], command: str,
                needles: tuple[str, ...]) -> Case:
    def build(ws: Workspace, d: Path) -> Prepared:
        store = ws.copy_store(d / "store.zarr")
        damage(store)
        return Prepared(store_argv(command, ws, d, store))
    return Case(name, command, what, "error", build, needles)


def _check_catalog(d: Path, ws: Workspace):
    def verify(res: Result) -> list[str]:
        import pandas as pd
        from astrotransfer.store import CutoutStore
        ids = CutoutStore.open(ws.store).column("object_id")
        cat = pd.read_csv(d / "cat.csv")
        probs = []
        if len(cat) != len(ids):
            probs.append(f"catalog has {len(cat)} rows, store has {len(ids)} committed")
        if not cat["object_id"].is_unique:
            probs.append("duplicate ids in the catalog")
        if set(cat["object_id"].astype(str)) != set(map(str, ids)):
            probs.append("catalog ids differ from the committed ids")
        return probs
    return verify


def _check_store_report(res: Result) -> list[str]:
    text = res.stdout + res.stderr
    return [] if f"{N_SIM} objects ({N_SIM} unique ids" in text else \
        [f"store check did not report {N_SIM} committed unique objects"]


def _check_embedding(store: Path):
    def verify(res: Result) -> list[str]:
        import zarr
        g = zarr.open_group(str(store), mode="r")
        arrays = [g[f"runs/{k}/embeddings"] for k in g["runs"].group_keys()]
        n = int(g.attrs["n_committed"])
        if len(arrays) != 1 or arrays[0].shape[0] != n:
            return [f"embeddings have {[a.shape for a in arrays]} rows, expected {n}"]
        return []
    return verify


def _uncommitted_case(command: str) -> Case:
    def build(ws: Workspace, d: Path) -> Prepared:
        store = ws.copy_store(d / "store.zarr")
        add_uncommitted_rows(store)
        argv = store_argv(command, ws, d, store)
        verify = {"store check": _check_store_report,
                  "predict --data": _check_catalog(d, ws),
                  "embed --data": _check_embedding(store)}.get(command)
        return Prepared(argv, verify=verify)
    return Case("store-uncommitted-rows", command,
                "a store with rows (NaN pixels, a repeated id) written past n_committed",
                "ok", build)


def _interrupted_ingest(ws: Workspace, d: Path, n_keep: int = 24) -> tuple[Path, list]:
    """`out.zarr.partial` as a kill leaves it: n_keep rows committed, more written."""
    tmp = sim_store(d / "tmp.zarr")
    g = _zarr(tmp)
    g.attrs.update({"n_committed": n_keep, "complete": False})
    ids = np.asarray(g["object_id"][:])
    ids[n_keep:] = ids[0]  # uncommitted garbage: repeats a committed id
    g["object_id"][:] = ids
    out = d / "out.zarr"
    tmp.rename(out.with_name(out.name + ".partial"))
    argv = ["ingest", "sim", "--instrument", "sdss", "--n", str(N_SIM), "--seed", "0",
            "--size", str(SIM_SIZE), "--split-fractions", "0.6,0.2,0.2", "--out", out]
    return out, argv


def _resume_case() -> Case:
    def build(ws: Workspace, d: Path) -> Prepared:
        out, argv = _interrupted_ingest(ws, d)

        def verify(res: Result) -> list[str]:
            from astrotransfer.store import CutoutStore, check_store
            probs = []
            if "resumed after 24 done" not in res.stderr:
                probs.append("the ingest did not resume after the 24 committed objects")
            report = check_store(out)
            a, b = CutoutStore.open(out), CutoutStore.open(ws.store)
            ia, ib = np.argsort(a.column("object_id")), np.argsort(b.column("object_id"))
            if report["unique_ids"] != N_SIM or report["n"] != N_SIM:
                probs.append(f"resumed store has {report['n']} rows, {report['unique_ids']} ids")
            elif not (a.column("object_id")[ia] == b.column("object_id")[ib]).all():
                probs.append("resumed store ids differ from an uninterrupted ingest")
            elif not np.array_equal(a.read_images(ia), b.read_images(ib)):
                probs.append("resumed store pixels differ from an uninterrupted ingest")
            return probs
        return Prepared(argv, verify=verify)
    return Case("store-uncommitted-rows", "ingest (resume)",
                "an interrupted ingest's .partial store: 24 rows committed, 16 written past them",
                "ok", build)


def _interrupted_check_case(final: bool) -> Case:
    def build(ws: Workspace, d: Path) -> Prepared:
        out, _ = _interrupted_ingest(ws, d)
        return Prepared(["store", "check", out if final else out.with_name("out.zarr.partial")])
    if final:
        return Case("store-interrupted", "store check",
                    "the final name of a store whose ingest was killed (only .partial exists)",
                    "error", build, ("out.zarr", "run the same ingest command again"))
    return Case("store-interrupted-partial", "store check",
                "the .partial folder of a killed ingest", "error", build,
                ("out.zarr.partial", "re-run it to resume"))


def store_cases() -> list[Case]:
    cases = []
    for command in STORE_COMMANDS:
        cases.append(_store_case("store-newer-version", "a store whose store_version is 99",
                                 _newer_version, command, ("store.zarr", "upgrade")))
        cases.append(_store_case("store-missing-array", "a store whose images array is deleted",
                                 _missing_array, command, ("store.zarr", "'images'")))
    for command in ("store check", "predict --data", "evaluate --data", "embed --data",
                    "train --source"):
        cases.append(_uncommitted_case(command))
    cases.append(_resume_case())
    cases.append(_interrupted_check_case(True))
    cases.append(_interrupted_check_case(False))
    cases.append(_store_case("store-nan-pixels", "a store with a NaN pixel in a committed row",
                             _nan_store, "store check", ("store.zarr", "NaN")))
    return cases


# ---- run directories -----------------------------------------------------------------------

RUN_COMMANDS = ("evaluate", "predict", "embed", "similar", "study bands", "rank",
                "train --resume")


def run_argv(command: str, ws: Workspace, d: Path, run: Path, store: Path | None = None) -> list:
    store = store or ws.copy_store(d / "store.zarr")
    return {
        "evaluate": lambda: ["evaluate", run, "--data", store, "--split", "all"],
        "predict": lambda: ["predict", run, "--data", store, "--out", d / "cat.csv"],
        "embed": lambda: ["embed", run, "--data", store],
        "similar": lambda: ["similar", run, "--data", store, "--id", ws.first_id],
        "study bands": lambda: ["study", "bands", run, "--data", store, "--split", "all"],
        "rank": lambda: ["rank", run, "--target", store],
        "train --resume": lambda: ["train", "--source", ws.store, "--out", run, "--resume",
                                   *TRAIN_FAST],
    }[command]()


class PickledCode:
    """Unpickling this creates a folder: proof that a loader ran code from a checkpoint."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def write_pickled_checkpoint(path: Path, marker: Path) -> None:
    import torch
    state = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else {}
    state["extra"] = PickledCode(marker)
    torch.save(state, path)


def _no_checkpoint(run: Path, d: Path) -> None:
    for name in ("best.pt", "last.pt"):
        (run / name).unlink()


def _corrupt_checkpoint(run: Path, d: Path) -> None:
    for name in ("best.pt", "last.pt"):
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[: len(data) // 3])


def _pickled_checkpoint(run: Path, d: Path) -> None:
    for name in ("best.pt", "last.pt"):
        write_pickled_checkpoint(run / name, d / "MARKER")


def _runjson_classes(run: Path, d: Path) -> None:
    info = json.loads((run / "run.json").read_text())
    info.update(num_classes=3, class_names=["a", "b", "c"])
    (run / "run.json").write_text(json.dumps(info))


def _no_run_json(run: Path, d: Path) -> None:
    (run / "run.json").unlink()


def _marker_absent(d: Path):
    def verify(res: Result) -> list[str]:
        return ["the pickled code ran: MARKER was created"] if (d / "MARKER").exists() else []
    return verify


def _run_case(name: str, what: str, damage, command: str, needles: tuple[str, ...],
              verify_marker: bool = False) -> Case:
    def build(ws: Workspace, d: Path) -> Prepared:
        run = ws.copy_run(d / "run")
        damage(run, d)
        return Prepared(run_argv(command, ws, d, run),
                        verify=_marker_absent(d) if verify_marker else None)
    return Case(name, command, what, "error", build, needles)


def _data_mismatch_case(name: str, what: str, attrs: dict, command: str,
                        needles: tuple[str, ...]) -> Case:
    def build(ws: Workspace, d: Path) -> Prepared:
        run = ws.copy_run(d / "run")
        store = ws.copy_store(d / "store.zarr")
        _zarr(store).attrs.update(attrs)
        return Prepared(run_argv(command, ws, d, run, store))
    return Case(name, command, what, "error", build, needles)


def run_cases() -> list[Case]:
    cases = []
    for command in RUN_COMMANDS:
        resume = command == "train --resume"
        cases.append(_run_case("run-no-checkpoint", "a run directory without best.pt/last.pt",
                               _no_checkpoint, command,
                               ("last.pt",) if resume else ("run", "train the run first")))
        cases.append(_run_case("run-corrupt-checkpoint", "best.pt and last.pt truncated",
                               _corrupt_checkpoint, command, (".pt", "corrupt")))
        cases.append(_run_case("run-pickled-checkpoint",
                               "checkpoints holding a pickled object whose unpickling would "
                               "create a folder", _pickled_checkpoint, command,
                               (".pt", "pickled code", "refused"), verify_marker=True))
    for command in ("evaluate", "predict", "embed", "similar", "study bands", "rank"):
        cases.append(_data_mismatch_case(
            "run-classes-mismatch", "data with 3 classes for a 2-class run",
            {"class_names": ["a", "b", "c"]}, command, ("store.zarr", "3 classes", "2")))
        cases.append(_data_mismatch_case(
            "run-bands-mismatch", "data with bands g,r,z for a g,r,i run",
            {"bands": ["g", "r", "z"]}, command, ("store.zarr", "missing i")))
    for command in ("evaluate", "predict"):
        cases.append(_run_case("run-checkpoint-vs-run-json",
                               "run.json says 3 classes, the checkpoint holds a 2-class head",
                               _runjson_classes, command, ("run", "does not fit")))
        cases.append(_run_case("run-not-a-run", "a run directory without run.json",
                               _no_run_json, command, ("run", "run.json")))
    return cases


# ---- outputs -------------------------------------------------------------------------------

def _file_as_dir(d: Path) -> Path:
    blocker = d / "blocker"
    blocker.write_text("a regular file standing where a folder should be\n")
    return blocker


def output_cases() -> list[Case]:
    def predict_existing(ws: Workspace, d: Path) -> Prepared:
        run = ws.copy_run(d / "run")
        (d / "cat.csv").write_text("object_id\nkeep-me\n")
        return Prepared(["predict", run, "--data", ws.copy_store(d / "store.zarr"),
                         "--out", d / "cat.csv"])

    def predict_under_file(ws: Workspace, d: Path) -> Prepared:
        run = ws.copy_run(d / "run")
        return Prepared(["predict", run, "--data", ws.copy_store(d / "store.zarr"),
                         "--out", _file_as_dir(d) / "cat.csv"])

    def predict_suffix(ws: Workspace, d: Path) -> Prepared:
        run = ws.copy_run(d / "run")
        return Prepared(["predict", run, "--data", ws.copy_store(d / "store.zarr"),
                         "--out", d / "cat.xlsx"])

    def ingest_under_file(ws: Workspace, d: Path) -> Prepared:
        return Prepared(["ingest", "sim", "--n", "8", "--size", "16",
                         "--out", _file_as_dir(d) / "out.zarr"])

    def ingest_existing(ws: Workspace, d: Path) -> Prepared:
        store = ws.copy_store(d / "out.zarr")
        return Prepared(["ingest", "sim", "--n", "8", "--size", "16", "--out", store])

    def train_under_file(ws: Workspace, d: Path) -> Prepared:
        return Prepared(["train", "--source", ws.store, "--out", _file_as_dir(d) / "run",
                         *TRAIN_FAST])

    def train_existing(ws: Workspace, d: Path) -> Prepared:
        run = ws.copy_run(d / "run")
        return Prepared(["train", "--source", ws.store, "--out", run, *TRAIN_FAST])

    return [
        Case("output-exists", "predict", "--out names an existing catalog, no --overwrite",
             "error", predict_existing, ("cat.csv", "--overwrite")),
        Case("output-exists", "ingest", "--out names an existing store, no --overwrite",
             "error", ingest_existing, ("out.zarr", "--overwrite")),
        Case("output-exists", "train", "--out names an existing run, no --resume",
             "error", train_existing, ("run", "--resume")),
        Case("output-unwritable", "predict", "--out inside a regular file (blocker/cat.csv)",
             "error", predict_under_file, ("blocker", "not a folder")),
        Case("output-unwritable", "ingest", "--out inside a regular file (blocker/out.zarr)",
             "error", ingest_under_file, ("blocker", "not a folder")),
        Case("output-unwritable", "train", "--out inside a regular file (blocker/run)",
             "error", train_under_file, ("blocker", "not a folder")),
        Case("output-unknown-format", "predict", "--out cat.xlsx", "error", predict_suffix,
             ("cat.xlsx", ".fits, .parquet or .csv")),
    ]


# ------------------------------------------------------------------------------- the corpus


def _strict(case: Case) -> Case:
    def build(ws: Workspace, d: Path) -> Prepared:
        p = case.build(ws, d)
        return Prepared([*p.argv, "--strict"], p.env, skip_id=p.skip_id)
    return Case(case.name, f"{case.command} --strict", case.what, "error", build,
                ("--strict",))


def all_cases() -> list[Case]:
    from job_folders import job_folder_cases  # these import this module: import them late
    from real_files import real_file_cases

    base = image_cases() + frame_cases() + name_cases() + store_cases() + run_cases() \
        + output_cases() + real_file_cases() + job_folder_cases()
    out = []
    for case in base:
        out.append(case)
        if case.expect == "skip":
            out.append(_strict(case))
    ids = [c.id for c in out]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return out


# ------------------------------------------------------------------------------- the contract


def error_lines(stderr: str) -> list[str]:
    """stderr lines that are not library warnings printed at import time."""
    return [ln for ln in stderr.splitlines()
            if ln.strip() and "[WARNING]" not in ln and "real_accelerator" not in ln]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (-1, 0) if p.is_dir() else (st.st_size, st.st_mtime_ns)
    return out


def _leftovers(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*")
            if p.name.endswith((".partial", ".tmp"))]


@dataclass
class Outcome:
    case: Case
    argv: list
    rc: int
    message: str
    problems: list[str]
    seconds: float
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def _skip_record(store: Path, oid: str | None) -> tuple[str | None, int]:
    from astrotransfer.store import CutoutStore
    s = CutoutStore.open(store)
    reasons = dict(s.skipped())
    return reasons.get(oid) if oid else None, len(reasons)


def check(case: Case, prep: Prepared, res: Result, before: dict, d: Path) -> Outcome:
    problems: list[str] = []
    lines = error_lines(res.stderr)
    if "Traceback" in res.stderr:
        problems.append("traceback on stderr")
    message = ""
    if case.expect == "error":
        errs = [ln for ln in lines if ln.startswith("error:")]
        message = errs[0] if errs else (lines[-1] if lines else "")
        if res.rc == 0:
            problems.append("exit code 0")
        if len(errs) != 1 or len(lines) != 1:
            problems.append(f"{len(lines)} stderr lines, {len(errs)} starting 'error:' "
                            f"(want exactly one)")
        for needle in case.needles + ((prep.skip_id,) if prep.skip_id else ()):
            if needle not in message:
                problems.append(f"message lacks {needle!r}")
        after = snapshot(d)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        if changed:
            problems.append(f"output left or changed: {', '.join(changed[:4])}")
    else:
        if res.rc != 0:
            problems.append(f"exit code {res.rc}: {lines[-1] if lines else ''}")
        left = _leftovers(d)
        if left:
            problems.append(f"temporary output left: {', '.join(left[:4])}")
        if case.expect == "skip" and res.rc == 0:
            reason, n = _skip_record(prep.store, prep.skip_id)
            if reason is None:
                problems.append(f"{prep.skip_id} not recorded in skipped/")
            elif not reason.startswith(case.needles[0]):
                problems.append(f"reason {reason!r} does not start with {case.needles[0]!r}")
            summary = [ln for ln in lines if ln.lstrip().startswith("skipped")
                       and case.needles[0].split(":")[0] in ln]
            if f"skipped {n}" not in res.stderr or not summary:
                problems.append(f"summary does not count the {n} skip(s) by reason")
            message = f"skipped {prep.skip_id}: {reason}"
        elif case.expect == "ok":
            out = [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]
            summary = [ln.strip() for ln in res.stderr.splitlines() if "ingested" in ln]
            message = out[-1] if out else (summary[0] if summary else "")
    if prep.verify is not None:
        problems.extend(prep.verify(res))
    return Outcome(case, prep.argv, res.rc, message, problems, res.seconds, res.stderr)


def run_case(case: Case, ws: Workspace, runner, d: Path) -> Outcome:
    d.mkdir(parents=True, exist_ok=True)
    prep = case.build(ws, d)
    prep.argv = [str(a) for a in prep.argv]
    before = snapshot(d)
    res = runner(prep.argv, prep.env, d)
    return check(case, prep, res, before, d)


def display_argv(argv: list[str], d: Path, ws: Workspace) -> str:
    """The command as a user would type it, with temporary folders shortened."""
    out = []
    for a in argv:
        for base, label in ((str(d) + "/", ""), (str(ws.base) + "/", "")):
            a = a.replace(base, label)
        out.append(a)
    return "astrotransfer " + " ".join(out)
