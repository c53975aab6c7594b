"""`astrotransfer crossmatch A B`: join two catalogs by sky position.

Building a test set that overlaps two surveys (SDSS x DES in Khan et al.) starts with a
positional match. This command wraps `surveys.catalogs.crossmatch` (astropy's
`match_to_catalog_sky`, nearest neighbour within a radius) and reports what users must
check before trusting the join: how many matched, how many did not, and how many B objects
were claimed by more than one A object (blends, or a radius that is too large).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from astropy import units as u
from rich.console import Console
from rich.table import Table as RichTable

from astrotransfer.errors import UserError
from astrotransfer.hookspecs import hookimpl
from astrotransfer.surveys.catalogs import (DEC_NAMES, RA_NAMES, crossmatch, guess_column,
                                            read_table, write_table)


def parse_radius(text: str) -> float:
    """'1arcsec', '0.5 arcsec', '2e-4 deg' -> arcsec; a bare number means arcsec."""
    try:
        q = u.Quantity(text)
        value = q.to_value(u.arcsec) if q.unit != u.dimensionless_unscaled else q.value
    except Exception:
        raise UserError(f"--radius '{text}' is not an angle; write e.g. 1arcsec, 0.5arcsec "
                        f"or 0.0003deg") from None
    if not value > 0:
        raise UserError(f"--radius {text} must be positive; write e.g. 1arcsec")
    return float(value)


def run_crossmatch(a: Path, b: Path, radius: str, out: Path, ra_a=None, dec_a=None,
                   ra_b=None, dec_b=None) -> dict:
    radius_arcsec = parse_radius(radius)
    table_a = read_table(a, flag="argument A")
    same = Path(b).resolve() == Path(a).resolve()  # one file, two column pairs: read it once
    table_b = table_a if same else read_table(b, flag="argument B")
    cols = (guess_column(table_a, RA_NAMES, ra_a, a, "--ra-a"),
            guess_column(table_a, DEC_NAMES, dec_a, a, "--dec-a"),
            guess_column(table_b, RA_NAMES, ra_b, b, "--ra-b"),
            guess_column(table_b, DEC_NAMES, dec_b, b, "--dec-b"))
    joined, summary = crossmatch(table_a, table_b, radius_arcsec, *cols)
    write_table(joined, out)
    summary.update({"a": str(a), "b": str(b), "out": str(out), "columns": cols})
    return summary


def print_summary(summary: dict, console: Console) -> None:
    ra_a, dec_a, ra_b, dec_b = summary["columns"]
    t = RichTable(title=f"crossmatch within {summary['radius_arcsec']:g} arcsec", show_header=False)
    t.add_row("A", f"{summary['a']} ({summary['n_a']} rows; {ra_a}, {dec_a})")
    t.add_row("B", f"{summary['b']} ({summary['n_b']} rows; {ra_b}, {dec_b})")
    t.add_row("matched", str(summary["matched"]))
    t.add_row("unmatched A", str(summary["unmatched_a"]))
    t.add_row("unmatched B", str(summary["unmatched_b"]))
    t.add_row("B matched by >1 A", f"{summary['duplicate_b']} ({summary['rows_sharing_b']} rows, "
              f"flagged duplicate_match)")
    if summary["no_position_a"] or summary["no_position_b"]:
        t.add_row("no position", f"A {summary['no_position_a']}, B {summary['no_position_b']}")
    t.add_row("max separation", f"{summary['max_separation_arcsec']:.3f} arcsec")
    t.add_row("written", summary["out"])
    console.print(t)


@hookimpl
def register_commands(app):
    @app.command("crossmatch")
    def crossmatch_command(
        a: Annotated[Path, typer.Argument(help="catalog A (.csv, .fits, .parquet, .tab, ...)")],
        b: Annotated[Path, typer.Argument(help="catalog B; may be A itself with other columns")],
        out: Annotated[Path, typer.Option("--out", help="joined table: .csv, .fits, .parquet, "
                                          ".ecsv")],
        radius: Annotated[str, typer.Option(help="match radius, e.g. 1arcsec")] = "1arcsec",
        ra_a: Annotated[Optional[str], typer.Option(help="RA column of A (deg or hms)")] = None,
        dec_a: Annotated[Optional[str], typer.Option(help="Dec column of A")] = None,
        ra_b: Annotated[Optional[str], typer.Option(help="RA column of B")] = None,
        dec_b: Annotated[Optional[str], typer.Option(help="Dec column of B")] = None,
    ) -> None:
        """Match each A object to its nearest B object within a radius and write the join."""
        summary = run_crossmatch(a, b, radius, out, ra_a, dec_a, ra_b, dec_b)
        print_summary(summary, Console())
