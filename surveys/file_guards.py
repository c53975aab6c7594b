"""Guards for input files that lie: ids that are paths, images that decompress to gigabytes,
FITS headers that claim more data than the file holds.

Every guard judges from a name or a header only, before any pixel is decoded, so refusing a
hostile or damaged file costs a few kilobytes of memory however large it says it is. Each
problem becomes a `SkipObject` naming the file, so one bad file is one skipped object with a
reason (an error under --strict), never a crash or a machine out of memory.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image

from astrotransfer.errors import SkipObject

# The largest cutout decoded, in pixels. A stamp is resized to --size (64 px by default)
# right away, so 4096 x 4096 is far beyond any real stamp (Galaxy Zoo's are 424 px) while
# decoding one costs at most ~0.5 GB (3 bytes/px decoded + two float32 copies of 12 B/px).
# Pillow's own guard (Image.MAX_IMAGE_PIXELS, 89 M px) only *warns* up to 179 M px, which
# for an RGB image means ~2 GB decoded as float32 here, so it is not enough on its own.
MAX_IMAGE_PIXELS = 4096 * 4096
# Pillow warns (on stderr) when it opens an image between its limit and twice it; such an
# image is refused here with a reason, so the warning would only be a stray second line.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# Frames compressed as a stream (.gz, .bz2) cannot be read by section: astropy decompresses
# the whole data unit into memory. 1 GiB holds a 16k x 16k float32 frame (DES tiles are
# 10k x 10k); a header claiming more is refused rather than allocated.
MAX_STREAM_FRAME_BYTES = 1 << 30
STREAM_SUFFIXES = (".gz", ".bz2")


def unsafe_id_reason(object_id: str) -> str | None:
    """Why an id must not become part of a file name, or None when it is safe.

    The images survey looks for `<images>/<id>.<ext>`. An id holding a path separator (or
    NUL), or one that is `.`/`..`, could name a file outside the folder the user gave, so it
    is refused before any path is built; `..` inside a name ("a..b") is an ordinary name.
    """
    text = str(object_id)
    if any(sep in text for sep in ("/", "\\", "\0", os.sep)) or text.strip() in (".", ".."):
        return (f"unsafe id: {text!r} contains a path separator or is '.'/'..', so it cannot "
                f"name a file inside the images folder; fix the id column of the catalog")
    return None


def check_image_pixels(dims: tuple[int, ...], path: Path, what: str = "an image") -> None:
    """Refuse an image whose header declares more than MAX_IMAGE_PIXELS pixels (all planes)."""
    total = 1
    for n in dims:
        total *= int(n)
    if total > MAX_IMAGE_PIXELS:
        raise SkipObject(
            f"image too large: {path.name} declares {' x '.join(map(str, dims))} pixels "
            f"({total / 1e6:.0f} M), over the {MAX_IMAGE_PIXELS / 1e6:.0f} M-pixel limit for "
            f"{what} (a decompression bomb, or a whole frame: cut stamps from frames with a "
            f"FITS survey such as `ingest sdss`)")


def check_fits_hdu(hdu, path: Path) -> None:
    """Refuse a FITS image HDU whose header claims too many pixels, or more bytes than the
    file holds. Judged from the header alone (`hdu.shape`, `hdu.size` and `fileinfo()` read
    no data), before astropy allocates the array it claims."""
    check_image_pixels(tuple(hdu.shape), path, "a FITS cutout")
    if path.name.lower().endswith((".gz", ".bz2", ".fz")):
        return  # stream-compressed: the disk size says nothing; the pixel cap bounds memory
    info = hdu.fileinfo()
    if info is None:
        return
    have = os.path.getsize(path) - int(info["datLoc"])
    if int(hdu.size) > have:
        raise SkipObject(f"corrupt image: {path.name} is truncated (its header claims "
                         f"{int(hdu.size)} bytes of data, the file holds {max(have, 0)}); "
                         f"re-download or re-cut it")


def stream_frame_problem(path: Path, header) -> str | None:
    """Why a .gz/.bz2 frame must not be loaded whole, from its header; None when it may."""
    if not path.name.lower().endswith(STREAM_SUFFIXES):
        return None
    nbytes = abs(int(header.get("BITPIX", 8))) // 8
    for k in range(1, int(header.get("NAXIS", 0)) + 1):
        nbytes *= int(header.get(f"NAXIS{k}", 0))
    if nbytes <= MAX_STREAM_FRAME_BYTES:
        return None
    return (f"too large to decompress whole: the header claims {nbytes / 2**30:.1f} GiB of "
            f"pixels (limit {MAX_STREAM_FRAME_BYTES / 2**30:.0f} GiB for a {path.suffix} "
            f"frame); decompress it (gunzip/bunzip2) so it is read piece by piece, or "
            f"re-download it if the header is damaged")
