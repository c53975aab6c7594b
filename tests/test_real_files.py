"""The files real catalogs and image folders come in (issue 16, item 4), below the CLI.

The CLI-level contract of each case lives in the bad-input corpus
(tests/bad_inputs/real_files.py); these tests pin the reader's behaviour byte by byte and
measure what a decompression bomb costs in memory, in a fresh process so that the peak
resident size belongs to the bomb alone.
"""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from astrotransfer.errors import SkipObject, UserError
from astrotransfer.surveys.catalogs import read_table
from astrotransfer.surveys.file_guards import unsafe_id_reason

ROOT = Path(__file__).resolve().parents[1]
ROWS = "objid,ra,dec,note\n1,150.0,2.0,plain\n2,150.1,2.1,caf\u00e9\n"


@pytest.mark.parametrize("name,data", [
    ("bom.csv", b"\xef\xbb\xbf" + ROWS.encode()),
    ("crlf.csv", ROWS.replace("\n", "\r\n").encode()),
    ("cp1252.csv", ROWS.replace("plain", "\u2013 dash").encode("cp1252")),
    ("latin1.csv", ROWS.encode("latin-1") + b"3,150.2,2.2,\x81\n"),  # 0x81: not cp1252
    ("utf16.csv", ROWS.encode("utf-16")),
    ("quoted.csv", ROWS.replace("plain", '"a, b ""c"""').encode()),
    ("trailing.csv", (ROWS + "\n,,,\n , , ,\n\n").encode()),
    ("bom.csv.gz", gzip.compress(b"\xef\xbb\xbf" + ROWS.encode(), mtime=0)),
])
def test_spreadsheet_catalogs_read(tmp_path, caplog, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    with caplog.at_level("INFO", logger="astrotransfer"):
        t = read_table(path)
    assert t.colnames == ["objid", "ra", "dec", "note"]
    assert list(t["objid"][:2]) == [1, 2] and t["ra"][1] == pytest.approx(150.1)
    assert str(t["note"][1]) == "caf\u00e9"
    n = 3 if name.startswith("latin1") else 2
    assert len(t) == n
    if name.startswith("quoted"):
        assert str(t["note"][0]) == 'a, b "c"'
    if name.startswith("cp1252"):
        assert str(t["note"][0]) == "\u2013 dash"
        assert "not UTF-8" in caplog.text and "cp1252" in caplog.text
    if name.startswith("latin1"):
        assert "latin-1" in caplog.text
    if name.startswith("trailing"):
        assert "ignored 2 empty row(s)" in caplog.text


def test_blank_rows_between_objects_are_kept(tmp_path):
    """Only trailing blank rows go: inner ones keep their place, so row numbers stay true."""
    path = tmp_path / "c.csv"
    path.write_text("objid,ra,dec\n1,150,2\n,,\n2,150.1,2.1\n")
    assert len(read_table(path)) == 3


def test_duplicate_column_names_are_refused(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("objid, ra ,dec,ra,objid\n1,150,2,3,4\n")
    with pytest.raises(UserError) as err:
        read_table(path)
    msg = str(err.value)
    assert "dup.csv" in msg and "'ra' (columns 2, 4)" in msg and "'objid' (columns 1, 5)" in msg
    assert "rename" in msg


@pytest.mark.parametrize("oid", ["../secret", "../../etc/passwd", "a/b", "/etc/passwd",
                                 "a\\b", "..", ".", " .. ", "a\0b"])
def test_unsafe_ids(oid):
    assert unsafe_id_reason(oid).startswith("unsafe id:")


@pytest.mark.parametrize("oid", ["a..b", "587722981742084144", "J123456.7+012345", "obj.1",
                                 "...", "NGC 1566-17"])
def test_safe_ids(oid):
    assert unsafe_id_reason(oid) is None


def test_fits_cutout_claiming_more_than_it_holds(tmp_path):
    from astropy.io import fits
    from astrotransfer.surveys.images import _read_pixels
    p = tmp_path / "x.fits"
    fits.PrimaryHDU(np.zeros((24, 24), np.float32)).writeto(p)
    raw = p.read_bytes()
    header = fits.Header.fromstring(raw[:2880])
    header["NAXIS1"] = header["NAXIS2"] = 3000
    p.write_bytes(header.tostring().encode() + raw[2880:])
    with pytest.raises(SkipObject, match=r"corrupt image: x.fits is truncated .*36000000 bytes"):
        _read_pixels(p)


BOMB_SCRIPT = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from astrotransfer.errors import SkipObject
from astrotransfer.surveys import file_guards
from astrotransfer.surveys.images import _read_pixels
from real_files import png_bomb

def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
if sys.argv[3] == "unguarded":
    file_guards.MAX_IMAGE_PIXELS = 10**12
bomb = png_bomb(Path(sys.argv[2]), 8000, 8000)
before = hwm_mb()
try:
    _read_pixels(bomb)
    outcome = "decoded"
except SkipObject as exc:
    outcome = str(exc)
print(json.dumps({"before_mb": before, "after_mb": hwm_mb(), "outcome": outcome,
                  "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def test_decompression_bomb_is_refused_without_decoding(tmp_path):
    """8000 x 8000 RGB PNG (190 kB on disk, under Pillow's warning limit): refused from its
    header. Peak RSS (VmHWM) must not grow by more than 50 MB; decoding it would add the
    192 MB image and its float32 copies (~1 GB)."""
    proc = subprocess.run([sys.executable, "-c", BOMB_SCRIPT, str(ROOT / "tests" / "bad_inputs"),
                           str(tmp_path / "bomb.png"), "guarded"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"bomb peak RSS: {res}")
    assert res["outcome"].startswith("image too large: bomb.png declares 8000 x 8000")
    assert res["after_mb"] - res["before_mb"] < 50, res
