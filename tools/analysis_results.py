"""Regenerate docs/results/analysis.md (and its PNGs) from scratch: issue 6's real numbers.

    .venv/bin/python tools/analysis_results.py            # ~15-25 min on 2 shared CPU cores
    .venv/bin/python tools/analysis_results.py --quick    # smoke test, minutes; writes to
                                                          # <work>/docs unless --out is given
    .venv/bin/python tools/analysis_results.py --perf     # also predict memory + throughput

Why a script: the evaluation, calibration, embedding, band-study and label-free code is
unit-tested on tiny stores, but a number an astronomer can trust must come from a real run,
and must be reproducible by anyone with the shared data. Every step below is the ordinary
CLI (`ingest`, `train`, `evaluate`, `embed --map tsne --clusters K`, `study bands`) or an
existing tool (tools/label_free_selection.py, tools/predict_memory.py, tools/bench_predict.py);
this file only chooses sizes, runs them one at a time with one thread each, copies the
report PNGs, and writes the Markdown from the JSON they produce. No metric is recomputed here.

Stores, runs and checkpoints stay in --work (reused on a second call; --fresh wipes them);
only the small report files go to --out. The part of analysis.md between the
`observations` markers is hand-written (what a person saw in the PNGs) and is carried over
on regeneration, headed with the date it refers to, so it must be re-checked after a rerun.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from bench_common import SHARED_DATA  # noqa: E402
GZ1 = SHARED_DATA / "gz1_sdss"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
BEGIN, END = "<!-- observations:begin -->", "<!-- observations:end -->"
REUSED: list[str] = []  # stores/runs found in --work from an earlier invocation
PLOTS = ("per_class_accuracy", "confusion", "roc", "accuracy_vs_confidence", "entropy",
         "reliability")

FULL = dict(gz1_n=None, gz1_size=64, gz1_epochs=3, sim_n=2000, sim_src=48, sim_tgt=32,
            sim_image=32, sim_epochs=4, hst_n=1000, hst_size=32, hst_epochs=10, lf_n=600,
            mem_sizes="1000,100000", bench_n=3000)
QUICK = dict(gz1_n=300, gz1_size=32, gz1_epochs=1, sim_n=200, sim_src=48, sim_tgt=32,
             sim_image=32, sim_epochs=1, hst_n=120, hst_size=32, hst_epochs=1, lf_n=120,
             mem_sizes="1000,5000", bench_n=600)


def sh(*args, log: Path | None = None) -> float:
    """Run a command with one thread; its output goes to `log` (and the tail on failure)."""
    t0 = time.perf_counter()
    cmd = [str(a) for a in args]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True)
    if log:
        with log.open("a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def cli(*args, log=None) -> float:
    return sh(sys.executable, "-m", "astrotransfer.cli", *args, log=log)


def once(marker: Path, *args, log=None) -> None:
    """A CLI step whose output `marker` already exists is skipped (rerun after a kill)."""
    if marker.exists():
        REUSED.append(marker.name)
    else:
        cli(*args, log=log)


# ---------------------------------------------------------------- the experiments


def run_all(p: dict, work: Path, log: Path) -> dict:
    s = {k: work / f"{k}.zarr" for k in ("gz1", "sdss", "des", "hst")}
    catalog = GZ1 / "labels.csv"
    if p["gz1_n"]:  # quick: the head of the catalog (about 70 % ellipticals, like the whole)
        lines = catalog.read_text().splitlines()
        catalog = work / "gz1_subset.csv"
        catalog.write_text("\n".join(lines[:p["gz1_n"] + 1]) + "\n")
    t = {}
    t0 = time.perf_counter()
    once(s["gz1"], "ingest", "images", "--images", GZ1 / "images", "--catalog", catalog,
         "--id-column", "objid", "--label-column", "gz1_class",
         "--label-map", "0=elliptical,1=spiral,2=spiral,3=spiral", "--drop-unmapped",
         "--crop", 212, "--size", p["gz1_size"], "--survey-name", "sdss-gz1",
         "--split-fractions", "0.6,0.15,0.25", "--out", s["gz1"], log=log)
    for inst, size, frac in (("sdss", p["sim_src"], "0.8,0.1,0.1"),
                             ("des", p["sim_tgt"], "0.5,0.1,0.4")):
        once(s[inst], "ingest", "sim", "--instrument", inst, "--n", p["sim_n"], "--seed", 0,
             "--size", size, "--split-fractions", frac, "--out", s[inst], log=log)
    once(s["hst"], "ingest", "sim", "--instrument", "hst", "--n", p["hst_n"], "--seed", 1,
         "--size", p["hst_size"], "--split-fractions", "0.7,0.1,0.2", "--out", s["hst"], log=log)
    t["ingest"] = time.perf_counter() - t0

    runs = {k: work / f"run_{k}" for k in ("gz1", "sim", "hst")}
    common = ("--batch-size", 32, "--augment", "flip,rot90", "--device", "cpu", "--seed", 0)
    train = {
        "gz1": ("--source", s["gz1"], "--backbone", "tf_efficientnet_lite0", "--pretrained",
                "auto", "--image-size", p["gz1_size"], "--epochs", p["gz1_epochs"]),
        "sim": ("--source", s["sdss"], "--backbone", "tf_efficientnet_lite0", "--pretrained",
                "auto", "--image-size", p["sim_image"], "--epochs", p["sim_epochs"]),
        "hst": ("--source", s["hst"], "--backbone", "resnet18", "--pretrained", "none",
                "--epochs", p["hst_epochs"]),
    }
    for key, opts in train.items():
        t0 = time.perf_counter()
        if (runs[key] / "best.pt").exists():
            REUSED.append(runs[key].name)
        else:
            resume = ("--resume",) if runs[key].exists() else ()
            cli("train", *opts, *common, "--out", runs[key], *resume, log=log)
        t[f"train_{key}"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ev = {}
    for name, run, store in (("gz1", runs["gz1"], s["gz1"]), ("sim_source", runs["sim"], s["sdss"]),
                             ("sim_des", runs["sim"], s["des"])):
        cli("evaluate", run, "--data", store, "--split", "test", log=log)
        ev[name] = run / "eval" / f"{store.name}_test"
    t["evaluate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cli("embed", runs["sim"], "--data", s["des"], "--split", "all", "--map", "tsne",
        "--clusters", 2, log=log)
    t["embed"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cli("study", "bands", runs["hst"], "--data", s["hst"], "--split", "test", log=log)
    t["bands"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if (work / "label_free").exists():
        REUSED.append("label_free/ runs")
    sh(sys.executable, ROOT / "tools" / "label_free_selection.py", "--n", p["lf_n"], "--size",
       32, "--subset", 4, "--out", work / "label_free", log=log)
    t["label_free"] = time.perf_counter() - t0
    return {"stores": s, "runs": runs, "eval": ev, "seconds": t,
            "embedding": runs["sim"] / "embedding" / f"{s['des'].name}_all",
            "bands": runs["hst"] / "study" / f"{s['hst'].name}_bands_test",
            "label_free": work / "label_free" / "label_free_selection.json"}


def run_perf(p: dict, work: Path, log: Path) -> dict:
    """predict_memory.py and bench_predict.py, one after the other; their JSON plus context."""
    res = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "load_before": os.getloadavg()}
    sh(sys.executable, ROOT / "tools" / "predict_memory.py", "--sizes", p["mem_sizes"],
       "--work", work / "memory", log=log)
    res["memory"] = json.loads((work / "memory" / "predict_memory.json").read_text())
    res["load_between"] = os.getloadavg()
    sh(sys.executable, ROOT / "tools" / "bench_predict.py", "--n", p["bench_n"], "--threads", 1,
       "--work", work / "bench", log=log)
    res["bench"] = json.loads((work / "bench" / "bench_predict.json").read_text())
    res["load_after"] = os.getloadavg()
    return res


# ---------------------------------------------------------------- the document


def f3(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def copy_report(src: Path, dst: Path) -> list[str]:
    """report.md/html and its PNGs (small files only) into docs; the PNG names present."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix in (".png", ".md", ".html"):
            shutil.copy2(f, dst / f.name)
    return [n for n in PLOTS if (dst / f"{n}.png").exists()]


def describe_eval(title: str, m: dict, rel: str, present: list[str]) -> list[str]:
    """Numbers behind each figure of an evaluation report, read from its metrics.json."""
    names = m["class_names"]
    pct = m["confusion_percent"]
    tq = m["top_q"]
    ent = m["entropy"]
    cal = m["calibration"]
    ev = cal.get("eval") or {}
    qs = {round(q, 2): (a, f) for q, a, f in zip(tq["q"], tq["accuracy"], tq["f1_macro"])}
    out = [f"### {title}", "",
           f"Report: [{rel}/report.md]({rel}/report.md) ([html]({rel}/report.html)); "
           f"N = {m['n']} test objects, classes {', '.join(names)} (support "
           + ", ".join(f"{k} {v}" for k, v in m["support"].items()) + ").", "",
           f"**Accuracy {m['accuracy']:.3f}**, balanced accuracy {f3(m['macro']['recall'])}, "
           f"macro F1 {f3(m['macro']['f1'])}, **macro AUC {f3(m['macro']['auc'])}**, "
           f"ECE {f3(m['ece'])}, NLL {f3(m['nll'])}.", "",
           "| class | precision | recall | F1 | FPR | AUC |", "|---|---:|---:|---:|---:|---:|"]
    for c in names:
        out.append(f"| {c} | {f3(m['precision'][c])} | {f3(m['recall'][c])} | "
                   f"{f3(m['f1'][c])} | {f3(m['fpr'][c])} | {f3(m['auc'].get(c))} |")
    out += ["", "| figure | what it shows (numbers from metrics.json) |", "|---|---|"]
    txt = {
        "per_class_accuracy": "recall per class: " + ", ".join(
            f"{c} {m['recall'][c]:.3f}" for c in names),
        "confusion": "row-normalised %: " + "; ".join(
            f"true {c} → " + ", ".join(f"{names[j]} {v:.1f}%" for j, v in enumerate(row))
            for c, row in zip(names, pct)) + f" (counts {m['confusion']})",
        "roc": "AUC " + ", ".join(f"{c} {f3(v)}" for c, v in m["auc"].items()),
        "accuracy_vs_confidence": "accuracy / macro F1 of the q most confident: " + ", ".join(
            f"q={int(q * 100)}% {qs[q][0]:.3f}/{qs[q][1]:.3f}" for q in (0.1, 0.3, 0.5, 0.8, 1.0)
            if q in qs),
        "entropy": f"mean {ent['mean']:.3f}, median {ent['median']:.3f} nats of max "
                   f"{ent['max']:.3f}; quantiles " + ", ".join(
            f"{k} {v:.3f}" for k, v in ent["quantiles"].items()),
        "reliability": (f"T = {f3(cal.get('temperature'))} fitted on "
                        f"{Path(str((cal.get('fit') or {}).get('store', '?'))).name}/val; "
                        f"test ECE {f3(ev.get('ece_before'))} → {f3(ev.get('ece_after'))}, "
                        f"NLL {f3(ev.get('nll_before'))} → {f3(ev.get('nll_after'))}")
        if cal.get("temperature") else cal.get("reason", ""),
    }
    out += [f"| [{n}.png]({rel}/{n}.png) | {txt[n]} |" for n in present]
    missing = [n for n in PLOTS if n not in present]
    if missing:
        out += ["", f"**Missing figures:** {', '.join(missing)}."]
    return out + [""]


def write_doc(p: dict, r: dict, out: Path, quick: bool, wall: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    doc = out / "analysis.md"
    old = doc.read_text() if doc.exists() else ""
    notes = old[old.index(BEGIN):old.index(END) + len(END)] if BEGIN in old and END in old \
        else f"{BEGIN}\n(No hand-written observations yet.)\n{END}"
    sub = out / "analysis"
    metrics = {k: json.loads((v / "metrics.json").read_text()) for k, v in r["eval"].items()}
    L = ["# Evaluation and analysis on real runs (issue 6)", ""]
    if quick:
        L += ["**QUICK MODE: tiny sizes, numbers are a smoke test, not results.**", ""]
    L += [f"Regenerate with `.venv/bin/python tools/analysis_results.py` (add `--perf` for "
          f"section 6). This run: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, wall time "
          f"{wall / 60:.1f} min on {os.cpu_count()} shared CPU cores, one thread per process; "
          f"load average at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
          + (f" (reused from an earlier invocation, so not a from-scratch time: "
             f"{', '.join(REUSED)})" if REUSED else " (from scratch)") + ". "
          "Step times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items()) + ".",
          "", "Sizes: " + ", ".join(f"{k}={v}" for k, v in p.items()) + ".", "",
          "## 1. Evaluation reports", "",
          f"GZ1: `../shared/data/gz1_sdss` read in place, elliptical (0) vs spiral (1, 2, 3), "
          f"classes 4 and 5 dropped, 212 px centre crop resized to {p['gz1_size']} px, splits "
          f"60/15/25 %; tf_efficientnet_lite0 with `--pretrained auto` (ImageNet weights, "
          f"resolved offline), {p['gz1_epochs']} epochs, flip+rot90 augmentation. Sim: "
          f"{p['sim_n']} objects rendered once (population seed 0) through the SDSS "
          f"({p['sim_src']} px) and DES ({p['sim_tgt']} px) instrument models; lite0 (ImageNet) "
          f"fine-tuned on SDSS only, {p['sim_epochs']} epochs at {p['sim_image']} px, then "
          f"evaluated on the DES test split (no DES data seen in training).", ""]
    for key, title in (("gz1", "GZ1 (real SDSS), test split"),
                       ("sim_des", "sim SDSS → sim DES, DES test split")):
        present = copy_report(r["eval"][key], sub / key)
        L += describe_eval(title, metrics[key], f"analysis/{key}", present)
    ms = metrics["sim_source"]
    L += [f"For reference, the same sim run on its own SDSS test split: accuracy "
          f"{ms['accuracy']:.3f}, macro AUC {f3(ms['macro']['auc'])} (N = {ms['n']}); on DES "
          f"the accuracy changes by {metrics['sim_des']['accuracy'] - ms['accuracy']:+.3f}. "
          f"(The sim run's temperature is fitted on the DES validation split, the evaluated "
          f"store's own labelled val objects.)", ""]
    lf = metrics["sim_des"]["label_free"]
    L += ["Label-free scores of the sim run on DES (lower is better): " + ", ".join(
        f"{k} {f3(lf.get(k))}" for k in ("entropy", "im", "mmd", "dev")) + ".", ""]

    emb = json.loads((r["embedding"] / "embedding.json").read_text())
    shutil.copy2(emb["png"], sub / "tsne_sim_des.png")
    c = emb["clusters"]
    L += ["## 2. t-SNE map of the sim DES embeddings", "",
          f"`astrotransfer embed run_sim --data des.zarr --split all --map tsne --clusters 2`: "
          f"{emb['n_points']} DES objects (all splits), penultimate lite0 features of the "
          f"SDSS-trained run, coloured by {emb['coloured_by']}. k-means (k = {c['k']}, cluster "
          f"sizes {c['sizes']}): **purity {f3(c['purity'])}**, NMI {f3(c['nmi'])}, ARI "
          f"{f3(c['ari'])} over {c['n_labelled']} labelled objects.", "",
          "![t-SNE](analysis/tsne_sim_des.png)", ""]

    b = json.loads((r["bands"] / "band_study.json").read_text())
    shutil.copy2(b["png"], sub / "band_drops_hst.png")
    L += ["## 3. Band study on the 5-band sim HST store", "",
          f"resnet18 from random init, {p['hst_epochs']} epochs on {p['hst_n']} sim star "
          f"clusters (4 classes, {p['hst_size']} px, 70/10/20 % splits); `astrotransfer study "
          f"bands` zeroes one band at a time on the test split (N = {b['n']}). Baseline "
          f"accuracy {b['baseline_accuracy']:.3f}.", "",
          "| band | accuracy with the band zeroed | drop |", "|---|---:|---:|"]
    L += [f"| {k} | {b['accuracy'][k]:.3f} | {v:+.3f} |"
          for k, v in sorted(b["drops"].items(), key=lambda kv: -kv[1])]
    L += ["", "![band drops](analysis/band_drops_hst.png)", ""]

    cal = metrics["gz1"]["calibration"]
    shutil.copy2(r["eval"]["gz1"] / "reliability.png", sub / "reliability_gz1.png")
    if cal.get("temperature"):
        fit, ev = cal["fit"], cal.get("eval", {})
        L += ["## 4. Calibration (temperature scaling) on GZ1", "",
              f"T = {cal['temperature']:.3f}, fitted on the GZ1 validation split (N = {fit['n']}).",
              "", "| data | N | ECE before | ECE after | NLL before | NLL after |",
              "|---|---:|---:|---:|---:|---:|"]
        for name, blk in (("validation (fit)", fit), ("test", ev)):
            if blk:
                L.append(f"| {name} | {blk['n']} | {blk['ece_before']:.4f} | "
                         f"{blk['ece_after']:.4f} | {blk['nll_before']:.4f} | "
                         f"{blk['nll_after']:.4f} |")
    else:
        L += ["## 4. Calibration on GZ1", "", f"Not fitted: {cal.get('reason')}"]
    L += ["", "![reliability](analysis/reliability_gz1.png)", ""]

    sel = json.loads(r["label_free"].read_text())
    rows = sorted(sel["runs"], key=lambda x: -x["target_accuracy"])
    L += ["## 5. Label-free ranking on the sim pair", "",
          f"`tools/label_free_selection.py --n {sel['n']} --size {sel['size']} --subset "
          f"{sel['subset']}`: {len(rows)} runs ({sel['backbone']}, adapter/epochs/lr grid), "
          f"each scored by `Run.label_free_scores` (= `astrotransfer rank`) without DES "
          f"labels, compared with the DES-label choice over every {sel['subset']}-run subset.",
          "", "| run | DES accuracy | dev | entropy | im | mmd |", "|---|---:|---:|---:|---:|---:|"]
    L += [f"| {x['name']} | {x['target_accuracy']:.3f} | " + " | ".join(
        f"{x[k]:.4f}" for k in ("dev", "entropy", "im", "mmd")) + " |" for x in rows]
    L += ["", f"Best by labels: {rows[0]['name']} ({rows[0]['target_accuracy']:.3f}).", "",
          "| score | same best run as labels (top-1, subsets) | mean regret | pairwise order "
          "agreement | pick over all runs |", "|---|---:|---:|---:|---|"]
    for k, a in sel["agreement"].items():
        L.append(f"| {k} | {a['top1_agreement']:.0%} of {a['n_subsets']} | "
                 f"{a['mean_regret']:.3f} | {a['pairwise_agreement']:.0%} | "
                 f"{a['all_runs_pick']} ({a['all_runs_pick_accuracy']:.3f}) |")
    L += [""]

    perf_path = out / "analysis_perf.json"
    L += ["## 6. Predict memory and speed", ""]
    if perf_path.exists():
        pf = json.loads(perf_path.read_text())
        mem, bn = pf["memory"], pf["bench"]
        L += [f"Measured {pf['date']} by `--perf` (load average before "
              f"{pf['load_before'][0]:.1f}, between {pf['load_between'][0]:.1f}, after "
              f"{pf['load_after'][0]:.1f}; the machine is shared with other jobs).", "",
              f"`tools/predict_memory.py --sizes {','.join(str(x['n']) for x in mem['results'])}`"
              f" (`astrotransfer predict` under `/usr/bin/time -v`, .{mem['format']} catalog, "
              f"batch {mem['batch_size']}; imports alone {mem['imports_rss_mb']:.0f} MB; the "
              f"tool's stores are 64 sim renders copied with rot90/flip/noise and its model "
              f"the untrained tiny `test_efficientnet`, since memory depends on neither):", "",
              "| objects | peak RSS (MB) | over imports (MB) | wall (s) | catalog (MB) |",
              "|---:|---:|---:|---:|---:|"]
        L += [f"| {x['n']} | {x['peak_rss_mb']:.1f} | {x['above_imports_mb']:.1f} | "
              f"{x['seconds']:.1f} | {x['catalog_mb']} |" for x in mem["results"]]
        L += ["", f"Peak RSS growth {mem['growth']:+.1%}: **{mem['verdict']}** (must stay "
              f"within 10 %).", "",
              f"`tools/bench_predict.py --n {bn['n']} --threads {bn['threads']}` "
              f"({bn['backbone']}, {bn['image_shape']}, batch {bn['batch_size']}, "
              f".{bn['format']}, bare and pipeline interleaved in one process): bare forward "
              f"{bn['bare_images_per_s']:.0f} images/s, pipeline {bn['pipeline_images_per_s']:.0f}"
              f" images/s, **ratio {bn['ratio']:.3f}** (target ≥ 0.9: "
              f"{'met' if bn['ratio'] >= 0.9 else 'NOT met'}); CPU-time ratio "
              f"{bn['cpu_ratio']:.3f}; load at its end {bn['load_1min']}.", ""]
    else:
        L += ["Not measured yet: run with `--perf`.", ""]
    L += ["## 7. Kill and rerun", "",
          "`tests/test_kill_resume.py::test_predict_killed_three_times_gives_the_identical_"
          "catalog` kills `astrotransfer predict` three times mid-catalog, reruns it, and "
          "asserts the resumed Parquet catalog equals an uninterrupted run's exactly "
          "(`pd.testing.assert_frame_equal(check_exact=True)`: same ids, same probabilities, "
          "unique ids, no leftover `.partial`). Run it with `.venv/bin/python -m pytest "
          "tests/test_kill_resume.py -k predict`.", "",
          "## What the figures look like (hand-written)", "", notes, ""]
    doc.write_text("\n".join(L))
    print(f"wrote {doc}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--perf", action="store_true", help="also run predict_memory + bench_predict")
    ap.add_argument("--perf-only", action="store_true", help="only the --perf part")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--fresh", action="store_true", help="delete --work first")
    args = ap.parse_args()
    p = QUICK if args.quick else FULL
    work = args.work or Path("/tmp") / ("astrotransfer-analysis" + ("-quick" if args.quick else ""))
    out = args.out or (work / "docs" if args.quick else ROOT / "docs" / "results")
    if not GZ1.exists():
        raise SystemExit(f"{GZ1} is missing: this script needs the shared real data")
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    t0 = time.perf_counter()
    if args.perf or args.perf_only:
        (out / "analysis_perf.json").write_text(json.dumps(run_perf(p, work, log), indent=2))
    if args.perf_only:
        return
    r = run_all(p, work, log)
    write_doc(p, r, out, args.quick, time.perf_counter() - t0)
    print(f"total {(time.perf_counter() - t0) / 60:.1f} min; commands and output in {log}")


if __name__ == "__main__":
    main()
