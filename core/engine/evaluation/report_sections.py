"""What `evaluate` shows: report sections for calibration, label-free scores and seeds, and
the terminal tables.

`report.write_report` draws the labelled metrics; the sections here are inserted into the
same report.html/report.md before the run configuration, so one file still tells the whole
story. A store without labels gets a smaller report of the same shape.
"""
from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np

from ..runs import atomic_write_text
from . import plots
from .calibration import calibrated
from .report import _CSS, _html_table, _md_table, rich_table, write_report

Section = tuple[str, list[str], list[list[str]], str]  # title, head, rows, note

_SCORE_TEXT = {
    "entropy": "mean target prediction entropy (nats)",
    "im": "information maximisation: mean entropy − entropy of mean prediction",
    "mmd": "source–target feature MMD² (multi-kernel)",
    "dev": "DEV: importance-weighted source validation loss (You et al. 2019)",
}


def _num(v, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{0.0 if abs(v) < 0.5 * 10 ** -digits else v:.{digits}f}"  # no "-0.0000"
    return str(v)


def _pm(mean, std, *keys, digits: int = 4) -> str:
    for k in keys:
        mean = mean.get(k) if isinstance(mean, dict) else None
        std = std.get(k) if isinstance(std, dict) else None
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if isinstance(std, float) else "")


def calibration_section(cal: dict) -> Section:
    t = cal.get("temperature")
    if t is None:
        return ("Calibration (temperature scaling)", ["note"], [[cal.get("reason", "")]], "")
    rows = []
    for key, label in (("fit", "fitted on"), ("eval", "evaluated")):
        b = cal.get(key)
        if b:
            rows.append([f"{label}: {Path(str(b.get('store', ''))).name} / {b.get('split')}",
                         str(b["n"]), _num(b["ece_before"]), _num(b["ece_after"]),
                         _num(b["nll_before"]), _num(b["nll_after"])])
    note = (f"T = {t:.3f} divides the logits; accuracy is unchanged. T > 1 means the model "
            f"was over-confident.")
    return ("Calibration (temperature scaling)",
            ["data", "N", "ECE before", "ECE after", "NLL before", "NLL after"], rows, note)


def label_errors_summary(le: dict) -> str:
    """One line: how many labels the model contradicts with confidence, and how many of
    the objects it is unsure about."""
    text = (f"labels the model contradicts with confidence: {le['error_rate']:.1%} estimated "
            f"({le['n_issues']} of {le['n']} flagged; confident learning), unsure on "
            f"{le['ambiguous']:.0%}")
    if le.get("in_sample"):
        text += " — the run trained on these objects, so this is biased low"
    return text


def label_errors_section(le: dict) -> Section:
    rows = [[s["object_id"], s["label"], s["model_class"], _num(s["p"], 3)]
            for s in le["suspects"]]
    note = (label_errors_summary(le) + ". Suspects, most confident first: look at them "
            "before trusting the labels or the accuracy above; metrics.json lists them too.")
    return ("Labels the model contradicts", ["object id", "label", "model says", "p"], rows,
            note)


def label_free_section(lf: dict, std: dict | None = None) -> Section:
    rows = []
    for key in ("entropy", "im", "mmd", "dev"):
        value = _pm(lf, std, key) if std is not None else _num(lf.get(key))
        rows.append([key, value, _SCORE_TEXT[key]])
    note = "All lower is better; none uses target labels."
    if lf.get("reason"):
        note += f" Missing scores: {lf['reason']}."
    return ("Label-free scores", ["score", "value", "meaning"], rows, note)


def _table(head: list[str], rows: list[list[str]]) -> str:
    """Like report's tables, but only cells that read as numbers are right-aligned."""
    e = html.escape

    def cell(c) -> str:
        text = str(c)
        numeric = text.replace("±", "").replace(" ", "").replace(".", "").lstrip("-").isdigit()
        return f"<td class=\"num\">{e(text)}</td>" if numeric else f"<td>{e(text)}</td>"
    lines = ["<table>", "<tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"]
    lines += ["<tr>" + "".join(cell(c) for c in r) + "</tr>" for r in rows]
    return "\n".join(lines + ["</table>"])


def _linked(text: str) -> str:
    """Relative .html paths in a note become links (the report folder is self-contained)."""
    return re.sub(r"([\w./-]+\.html)", r'<a href="\1">\1</a>', text)


def add_sections(out_dir: Path, sections: list[Section], anchor: str = "Run configuration"):
    """Insert sections before `anchor` in report.html and report.md (or at their end)."""
    e = html.escape
    parts_html, parts_md = [], []
    for title, head, rows, note in sections:
        parts_html.append(f"<h2>{e(title)}</h2>\n{_table(head, rows)}"
                          + (f"\n<p>{_linked(e(note))}</p>" if note else ""))
        parts_md += [f"## {title}", "", _md_table(head, rows), ""] + ([note, ""] if note else [])
    page = out_dir / "report.html"
    text = page.read_text(encoding="utf-8")
    marker = f"<h2>{anchor}</h2>"
    block = "\n".join(parts_html) + "\n"
    text = text.replace(marker, block + marker, 1) if marker in text else \
        text.replace("</body>", block + "</body>", 1)
    atomic_write_text(page, text)
    md = out_dir / "report.md"
    if md.exists():
        text = md.read_text(encoding="utf-8")
        marker = f"## {anchor}"
        block = "\n".join(parts_md) + "\n"
        text = text.replace(marker, block + marker, 1) if marker in text else text + block
        atomic_write_text(md, text)


def _context(run, info: dict, store_attrs: dict, data: Path) -> tuple[dict, dict]:
    config = run.config_path.read_text() if run.config_path.exists() else ""
    return ({"run": str(run.path), "config.yaml": config},
            {"store": str(data), **store_attrs.get("provenance", {}),
             "weights": info.get("pretrained", "")})


def write_single_report(out_dir: Path, metrics: dict, target, run, info: dict, store,
                        data: Path, split: str) -> Path:
    title = f"{run.path.name} on {Path(data).name} ({split})"
    config, provenance = _context(run, info, store.attrs, data)
    sections = [calibration_section(metrics["calibration"]),
                label_free_section(metrics["label_free"])]
    if metrics.get("label_errors"):
        sections.append(label_errors_section(metrics["label_errors"]))
    lab = target.labelled()
    if len(lab.labels):
        cal = metrics["calibration"]
        write_report(out_dir, metrics, lab.probs, lab.labels, info["class_names"], config,
                     provenance, title, probs_calibrated=calibrated(lab.probs, cal),
                     temperature=cal.get("temperature"))
    else:
        _unlabelled_report(out_dir, metrics, target.probs, title)
    add_sections(out_dir, sections)
    return out_dir / "report.html"


def _unlabelled_report(out_dir: Path, metrics: dict, probs: np.ndarray, title: str) -> None:
    """No labels: the entropy histogram and the label-free numbers are all there is."""
    plots.plot_entropy_hist(probs, out_dir / "entropy.png")
    e = html.escape
    pred = np.bincount(probs.argmax(1), minlength=probs.shape[1])
    rows = [[n, str(int(c))] for n, c in zip(metrics["class_names"], pred)]
    atomic_write_text(out_dir / "report.html",
        f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}"
        f"</title><style>{_CSS}</style></head><body>\n<h1>{e(title)}</h1>\n"
        f"<p>This split has no labels: accuracy-type metrics are undefined.</p>\n"
        f"<h2>Predicted classes</h2>\n{_html_table(['class', 'objects'], rows)}\n"
        f"<figure><img src=\"entropy.png\" alt=\"entropy\"><figcaption>Prediction entropy"
        f"</figcaption></figure>\n</body></html>\n")
    atomic_write_text(out_dir / "report.md",
        f"# {title}\n\nThis split has no labels.\n\n## Predicted classes\n\n"
        f"{_md_table(['class', 'objects'], rows)}\n\n![entropy](entropy.png)\n")


def write_seeds_report(out_dir: Path, metrics: dict, ens_target, evals, run_path: Path,
                       data: Path, split: str) -> Path:
    from ...store import CutoutStore
    from ..runs import RunDir

    first = evals[0]
    run = RunDir(evals[0].run_path)
    config, provenance = _context(run, first.info, CutoutStore.open(data).attrs, data)
    config = {"run": str(run_path), "seeds": ", ".join(metrics["seeds"]),
              "config.yaml (first seed)": config["config.yaml"]}
    names = first.info["class_names"]
    n = metrics["n_seeds"]
    ens, agg = metrics["ensemble"], metrics["aggregate"]
    lab = ens_target.labelled()
    ens_dir = out_dir / "ensemble"
    title = f"{Path(run_path).name} on {Path(data).name} ({split})"
    if len(lab.labels):
        write_report(ens_dir, ens, lab.probs, lab.labels, names, config, provenance,
                     f"{title}: ensemble of {n} seeds",
                     probs_calibrated=calibrated(lab.probs, ens["calibration"]),
                     temperature=ens["calibration"].get("temperature"))
        write_report(out_dir, agg, None, None, names, config, provenance,
                     f"{title}: mean ± std over {n} seeds")
    else:
        ens_dir.mkdir(parents=True, exist_ok=True)
        _unlabelled_report(ens_dir, ens, ens_target.probs, f"{title}: ensemble of {n} seeds")
        _unlabelled_report(out_dir, ens, ens_target.probs, f"{title}: {n} seeds")
    add_sections(ens_dir, [calibration_section(ens["calibration"]),
                           label_free_section(ens["label_free"])]
                 + ([label_errors_section(ens["label_errors"])] if ens.get("label_errors")
                    else []))
    seed_head = ["seed run", "accuracy", "macro F1", "ECE", "T", "entropy", "IM", "MMD", "DEV"]
    seed_rows = [[r["seed_run"]] + [_num(r[k]) for k in ("accuracy", "macro_f1", "ece",
                                                         "temperature", "entropy", "im",
                                                         "mmd", "dev")]
                 for r in metrics["per_seed"]]
    ens_rows = [["accuracy", _num(ens.get("accuracy"))],
                ["macro F1", _num((ens.get("macro") or {}).get("f1"))],
                ["ECE", _num(ens.get("ece"))],
                ["temperature", _num(ens["calibration"].get("temperature"))]]
    m, s = agg["mean"], agg["std"]
    cal_rows = [[k, _pm(m, s, "calibration", *path)] for k, path in (
        ("temperature", ("temperature",)), ("ECE before (eval)", ("eval", "ece_before")),
        ("ECE after (eval)", ("eval", "ece_after")), ("NLL before (eval)", ("eval", "nll_before")),
        ("NLL after (eval)", ("eval", "nll_after")))]
    add_sections(out_dir, [
        ("Ensemble (seed-averaged probabilities)", ["metric", "value"], ens_rows,
         "Full ensemble report with all figures: ensemble/report.html"),
        ("Per seed", seed_head, seed_rows, ""),
        ("Calibration over seeds (mean ± std)", ["quantity", "value"], cal_rows, ""),
        label_free_section(m.get("label_free") or {}, s.get("label_free") or {}),
    ])
    return out_dir / "report.html"


# --------------------------------------------------------------------------- terminal
def _rich(head: list[str], rows: list[list[str]], title: str):
    from rich.table import Table

    t = Table(*head, title=title)
    for r in rows:
        t.add_row(*map(str, r))
    return t


def print_evaluation(metrics: dict, console) -> None:
    """Everything metrics.json holds that a person reads first, as terminal tables."""
    if "aggregate" in metrics:
        agg, ens = metrics["aggregate"], metrics["ensemble"]
        if metrics["n_labelled"]:
            t = rich_table(agg)
            t.title = f"mean ± std over {metrics['n_seeds']} seeds: {t.title}"
            console.print(t)
            t = rich_table(ens)
            t.title = f"ensemble: {t.title}"
            console.print(t)
        rows = [[r["seed_run"]] + [_num(r[k], 3) for k in ("accuracy", "macro_f1", "ece",
                                                          "temperature", "im", "dev")]
                for r in metrics["per_seed"]]
        console.print(_rich(["seed", "acc", "F1", "ECE", "T", "IM", "DEV"], rows, "per seed"))
        _print_blocks(ens, console, "ensemble ")
        title, head, rows, _ = label_free_section(agg["mean"].get("label_free") or {},
                                                  agg["std"].get("label_free") or {})
        console.print(_rich(head, rows, f"{title} of the seeds, mean ± std (lower is better)"))
        return
    if metrics.get("n_labelled"):
        console.print(rich_table(metrics))
        console.print(f"balanced accuracy {_num(metrics['macro']['recall'], 3)}  "
                      f"macro F1 {_num(metrics['macro']['f1'], 3)}  "
                      f"macro AUC {_num(metrics['macro']['auc'], 3)}  "
                      f"ECE {_num(metrics['ece'], 3)}  NLL {_num(metrics['nll'], 3)}")
    else:
        console.print(f"{metrics['n_objects']} objects, no labels: label-free scores only "
                      f"(mean entropy {_num(metrics['entropy']['mean'], 3)} nats)")
    _print_blocks(metrics, console)


def _print_blocks(metrics: dict, console, prefix: str = "") -> None:
    cal = metrics["calibration"]
    title, head, rows, note = calibration_section(cal)
    if cal.get("temperature") is None:
        console.print(f"{prefix}{title}: {cal.get('reason')}")
    else:
        console.print(_rich(head, rows, prefix + title))
        console.print(note)
    lf = metrics["label_free"]
    title, head, rows, note = label_free_section(lf)
    rows = [r for r in rows if not (prefix and r[1] == "—")]  # ensemble: seeds' table follows
    console.print(_rich(head, rows, prefix + title + " (lower is better)"))
    if lf.get("reason") and not prefix:
        console.print(f"[yellow]note:[/] {lf['reason']}")
    if metrics.get("label_errors"):
        console.print(prefix + label_errors_summary(metrics["label_errors"]))
