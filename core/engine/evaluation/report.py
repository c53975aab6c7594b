"""An evaluation report a person can open: all figures, the numbers, and what produced them.

The HTML is a single file with inline CSS that refers to the PNGs beside it by relative
name, so a report directory can be zipped, copied or served as it is. The Markdown twin
renders on GitHub and in most notebooks. Both carry the run config and the data
provenance, because a table of numbers without them cannot be reproduced or trusted.
`write_report` also accepts an `aggregate_metrics` result, shown as mean ± std.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from ..runs import atomic_write_text
from . import plots

__all__ = ["write_report", "format_table", "rich_table", "PLOT_FILES"]

# file name -> caption; the order is the order in the report.
PLOT_FILES = {
    "per_class_accuracy.png": "Per-class accuracy (recall)",
    "confusion.png": "Confusion matrix",
    "roc.png": "ROC curves",
    "accuracy_vs_confidence.png": "Accuracy and F1 on the most confident objects",
    "entropy.png": "Prediction entropy",
    "reliability.png": "Reliability diagram",
}


def _split(metrics: dict) -> tuple[dict, dict | None, int]:
    if "mean" in metrics and "std" in metrics and "n_runs" in metrics:
        return metrics["mean"], metrics["std"], int(metrics["n_runs"])
    return metrics, None, 1


def _get(d: dict | None, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _val(m: dict, s: dict | None, *keys, digits: int = 3) -> str:
    v = _get(m, *keys)
    if v is None:
        return "—"
    out = f"{v:.{digits}f}" if isinstance(v, float) else str(v)
    e = _get(s, *keys)
    return f"{out} ± {e:.{digits}f}" if isinstance(e, float) and s is not None else out


def _summary_rows(metrics: dict) -> list[tuple[str, str]]:
    m, s, n_runs = _split(metrics)
    rows = [("objects (N)", _val(m, s, "n", digits=0)), ("accuracy", _val(m, s, "accuracy")),
            ("macro precision", _val(m, s, "macro", "precision")),
            ("macro recall (balanced accuracy)", _val(m, s, "macro", "recall")),
            ("macro F1", _val(m, s, "macro", "f1")), ("macro AUC", _val(m, s, "macro", "auc")),
            ("ECE (15 bins)", _val(m, s, "ece")), ("NLL", _val(m, s, "nll")),
            ("mean prediction entropy (nats)", _val(m, s, "entropy", "mean"))]
    if _get(m, "binary"):
        pos = _get(m, "binary", "positive_class")
        rows += [(f"binary ({pos} positive) {k}", _val(m, s, "binary", k))
                 for k in ("precision", "recall", "f1", "fpr", "auc")]
    if n_runs > 1:
        rows.insert(0, ("runs aggregated", str(n_runs)))
    return rows


def _class_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    m, s, _ = _split(metrics)
    names = list(m.get("class_names") or m["recall"].keys())
    head = ["class", "support", "precision", "recall", "F1", "FPR", "AUC"]
    rows = [[n, _val(m, s, "support", n, digits=0)] +
            [_val(m, s, key, n) for key in ("precision", "recall", "f1", "fpr", "auc")]
            for n in names]
    return head, rows


def _top_q_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    m, s, _ = _split(metrics)
    tq = m.get("top_q") or {}
    head = ["kept fraction", "objects", "min confidence", "accuracy", "F1 (macro)"]
    rows = []
    for i, q in enumerate(tq.get("q", [])):
        def cell(key, digits=3):
            v = tq[key][i]
            e = _get(s, "top_q", key)
            e = e[i] if isinstance(e, list) else None
            if v is None:
                return "—"
            return f"{v:.{digits}f}" + (f" ± {e:.{digits}f}" if e is not None and s else "")
        rows.append([f"{q:.0%}", f"{tq['n'][i]:.0f}", cell("min_confidence"),
                     cell("accuracy"), cell("f1_macro")])
    return head, rows


def _flatten(d, prefix: str = "") -> list[tuple[str, str]]:
    """Nested config/provenance as dotted keys, so any depth fits one two-column table."""
    if not isinstance(d, dict):
        return [(prefix or "value", _scalar(d))]
    rows = []
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            rows += _flatten(v, key)
        else:
            rows.append((key, _scalar(v)))
    return rows


def _scalar(v) -> str:
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, default=str)
    return str(v)


# --------------------------------------------------------------------------- HTML / Markdown
_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;
max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;border-bottom:2px solid #0072B2;padding-bottom:.2em}
h2{font-size:1.25em;margin-top:1.6em;color:#0072B2}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eef4f9}td.num{text-align:right;font-variant-numeric:tabular-nums}
td code{white-space:pre-wrap;word-break:break-all}
.figs{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0;flex:1 1 460px;max-width:540px}
figure img{width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.9em;color:#555;text-align:center}"""


def _html_table(head: list[str] | None, rows, numeric_from: int = 1, code: bool = False) -> str:
    e = html.escape
    parts = ["<table>"]
    if head:
        parts.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
    for row in rows:
        cells = []
        for j, c in enumerate(row):
            if code and j > 0:
                cells.append(f"<td><code>{e(str(c))}</code></td>")
            else:
                cls = ' class="num"' if j >= numeric_from and not code else ""
                cells.append(f"<td{cls}>{e(str(c))}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(parts + ["</table>"])


def _md_table(head: list[str], rows) -> str:
    def esc(x):
        return str(x).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def _make_plots(out_dir: Path, metrics: dict, probs, y_true, probs_calibrated) -> dict[str, str]:
    made = {}
    plots.plot_per_class_accuracy(metrics, out_dir / "per_class_accuracy.png")
    plots.plot_confusion(metrics, out_dir / "confusion.png")
    plots.plot_roc(metrics, out_dir / "roc.png")
    plots.plot_accuracy_vs_confidence(metrics, out_dir / "accuracy_vs_confidence.png")
    plots.plot_entropy_hist(probs if probs is not None else metrics, out_dir / "entropy.png")
    if probs is not None and y_true is not None:  # needs per-object data, absent for aggregates
        plots.plot_reliability(y_true, probs, probs_calibrated, out_dir / "reliability.png")
    for name, caption in PLOT_FILES.items():
        if (out_dir / name).exists():
            made[name] = caption
    return made


def write_report(out_dir: Path, metrics: dict, probs, y_true, class_names, config: dict,
                 provenance: dict, title: str, *, probs_calibrated=None,
                 temperature: float | None = None) -> Path:
    """Write every figure, ``report.html`` and ``report.md`` into ``out_dir``; return the
    HTML path. ``probs``/``y_true`` may be None (e.g. for an aggregate over seeds), in which
    case the reliability diagram is left out. ``probs_calibrated``, with the fitted
    ``temperature``, adds the after-scaling curve to the reliability diagram."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if probs is not None:
        probs = np.asarray(probs, dtype=float)
    if y_true is not None:
        y_true = np.asarray(y_true)
    m, _, _ = _split(metrics)
    names = list(class_names) if class_names is not None else list(m.get("class_names", []))
    figs = _make_plots(out_dir, metrics, probs, y_true, probs_calibrated)

    summary = _summary_rows(metrics)
    if temperature is not None:
        summary.append(("fitted temperature T", f"{temperature:.3f}"))
    c_head, c_rows = _class_rows(metrics)
    q_head, q_rows = _top_q_rows(metrics)
    conf = _flatten(config or {})
    prov = _flatten(provenance or {})
    e = html.escape

    fig_html = "\n".join(f'<figure><img src="{e(f)}" alt="{e(c)}"><figcaption>{e(c)}</figcaption>'
                         "</figure>" for f, c in figs.items())
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{e(title)}</h1>
<p>Classes: {e(", ".join(map(str, names)))}</p>
<h2>Summary</h2>
{_html_table(["metric", "value"], summary)}
<h2>Per class</h2>
{_html_table(c_head, c_rows)}
<h2>Figures</h2>
<div class="figs">
{fig_html}
</div>
<h2>Most confident fraction</h2>
{_html_table(q_head, q_rows)}
<h2>Run configuration</h2>
{_html_table(["key", "value"], conf, code=True) if conf else "<p>(none recorded)</p>"}
<h2>Data provenance</h2>
{_html_table(["key", "value"], prov, code=True) if prov else "<p>(none recorded)</p>"}
</body></html>
"""
    html_path = out_dir / "report.html"
    atomic_write_text(html_path, doc)

    md = [f"# {title}", "", f"Classes: {', '.join(map(str, names))}", "", "## Summary", "",
          _md_table(["metric", "value"], summary), "", "## Per class", "",
          _md_table(c_head, c_rows), "", "## Figures", ""]
    md += [f"![{c}]({f})\n" for f, c in figs.items()]
    md += ["## Most confident fraction", "", _md_table(q_head, q_rows), "",
           "## Run configuration", "",
           _md_table(["key", "value"], conf) if conf else "(none recorded)",
           "", "## Data provenance", "",
           _md_table(["key", "value"], prov) if prov else "(none recorded)", ""]
    atomic_write_text(out_dir / "report.md", "\n".join(md))
    return html_path


# --------------------------------------------------------------------------- terminal
def format_table(metrics: dict) -> str:
    """A short plain-text table for the terminal or a log file: overall accuracy, then
    precision/recall/F1/AUC per class and their macro averages."""
    m, s, n_runs = _split(metrics)
    head, rows = _class_rows(metrics)
    keep = [0, 2, 3, 4, 6]  # class, precision, recall, F1, AUC
    head = [head[i] for i in keep]
    rows = [[r[i] for i in keep] for r in rows]
    rows.append(["macro"] + [_val(m, s, "macro", k) for k in ("precision", "recall", "f1", "auc")])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]

    def line(r):
        return "  ".join(str(c).ljust(w) if j == 0 else str(c).rjust(w)
                         for j, (c, w) in enumerate(zip(r, widths)))
    runs = f" over {n_runs} runs" if n_runs > 1 else ""
    out = [f"accuracy {_val(m, s, 'accuracy')}  (N = {_val(m, s, 'n', digits=0)}){runs}",
           line(head), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows[:-1]] + ["  ".join("-" * w for w in widths), line(rows[-1])]
    return "\n".join(out)


def rich_table(metrics: dict):
    """The same content as `format_table` as a `rich.table.Table`, for coloured CLI output."""
    from rich.table import Table

    m, s, n_runs = _split(metrics)
    head, rows = _class_rows(metrics)
    runs = f", {n_runs} runs" if n_runs > 1 else ""
    t = Table(title=f"accuracy {_val(m, s, 'accuracy')} (N = {_val(m, s, 'n', digits=0)}{runs})")
    for i in (0, 2, 3, 4, 6):
        t.add_column(head[i], justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(r[0], r[2], r[3], r[4], r[6])
    t.add_section()
    t.add_row("macro", *[_val(m, s, "macro", k) for k in ("precision", "recall", "f1", "auc")],
              style="bold")
    return t
