"""Regenerate the throughput section of docs/benchmarks.md from the benchmark JSON files.

    .venv/bin/python tools/benchmarks_report.py --results DIR [--doc docs/benchmarks.md]

DIR holds what the benchmarks wrote with --json: ingest_images.json
(tools/bench_ingest_images.py), inference.json (tools/bench_inference.py), frames.json
(tools/bench_frames.py), predict_memory.json (tools/predict_memory.py) and, when a GPU was
lent, gpu.json (tools/bench_gpu.sh). The text between the `speed:begin` and `speed:end`
markers of the document is replaced; a missing file leaves its table out and says so.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- speed:begin (tools/benchmarks_report.py) -->", "<!-- speed:end -->"


def load(folder: Path, name: str) -> dict | None:
    path = folder / name
    return json.loads(path.read_text()) if path.exists() else None


def load_note(m: dict) -> str:
    return (f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}, 1-minute load average "
            f"{m['load_avg_1m_start']:.1f} → {m['load_avg_1m_end']:.1f}")


def ingest_section(r: dict) -> list[str]:
    rounds = r["rounds"]
    has_old = "old" in rounds[0]
    out = ["### `ingest images` against the decode limit (GZ1 JPEGs)", "",
           f"`tools/bench_ingest_images.py --n {r['n_catalog_rows']} --old-n {r['old_n']} "
           f"--rounds {len(rounds)}`: {r['n_catalog_rows']} catalog rows (GZ1's 4,800 stamps, "
           f"listed again under new ids past 4,800, read in place), 423 px → crop {r['crop']} "
           f"→ {r['size']} px, {r['processes']} processes; {load_note(r['machine'])}. "
           f"Interleaved in one run (`new` and `bare` swap order every round); `bare` makes "
           f"the Pillow calls of `stamp_decode.decode_resized`, the ingest's own (a test "
           f"checks both give the same arrays), over the same files; `old` is commit {r['baseline']} run from a `git archive` copy on the "
           f"first {r['old_n']} rows (its cost per object is constant).", "",
           "| round | load (1 min) | bare decode+resize | new | new ÷ bare | new s | bare s |"
           + (" old (torch default threads) | old, OMP_NUM_THREADS=1 | new ÷ old | "
              "new ÷ old (1 thread) | bare ÷ old (the ceiling) |" if has_old else ""),
           "|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|---:|---:|" if has_old else "")]
    for i, row in enumerate(rounds, 1):
        line = (f"| {i} | {row['load_avg_1m']:.1f} | {row['bare']['objects_per_s']} | "
                f"{row['new']['objects_per_s']} | {row['new_vs_bare']:.2f} | "
                f"{row['new']['seconds']} | {row['bare']['seconds']:.1f} |")
        if has_old:
            line += (f" {row['old']['objects_per_s']} | {row['old_omp1']['objects_per_s']} | "
                     f"{row['new_vs_old']:.1f} | {row['new_vs_old_omp1']:.1f} | "
                     f"{row['bare']['objects_per_s'] / row['old']['objects_per_s']:.1f} |")
        out.append(line)
    med = lambda k: statistics.median(row[k] for row in rounds)  # noqa: E731
    per = ", ".join(f"{row['new_vs_bare']:.2f}" for row in rounds)
    text = f"Median new ÷ bare {med('new_vs_bare'):.2f} (rounds: {per})"
    if has_old:
        ceiling = statistics.median(row["bare"]["objects_per_s"] / row["old"]["objects_per_s"]
                                    for row in rounds)
        text += (f"; median new ÷ old {med('new_vs_old'):.1f}, new ÷ old single-threaded "
                 f"{med('new_vs_old_omp1'):.1f}, bare ÷ old {ceiling:.1f}: no ingest that "
                 f"decodes these JPEGs with the same Pillow calls can be faster than the bare "
                 f"loop, so bare ÷ old is the most any can gain over the old code here")
    out += ["", text + " (objects/s). \"Old\" with torch's default threads is what the CLI "
            "did out of the box. The ingest runs its decode workers plus the committing main "
            "process against the bare loop's workers alone: on a machine loaded by others the "
            "three processes get a larger share of the cores than two, on a quiet one the "
            "main process's compression and zarr writes take cycles from decoding.", ""]
    return out


def ingest_cpu_section(r: dict) -> list[str]:
    rounds = r["rounds"]
    out = ["#### CPU seconds per object (the same work, whatever the scheduler does)", "",
           f"`tools/bench_ingest_cpu.py --n {r['n_catalog_rows']} --rounds {len(rounds)}`: "
           f"the ingest in-process through `astrotransfer.ingest` (no interpreter start-up), "
           f"main process and decode workers counted apart, against the bare loop's workers; "
           f"{load_note(r['machine'])}.", "",
           "| round | load (1 min) | bare ms/object | ingest main ms/object | of which "
           "compression | ingest workers ms/object | bare ÷ ingest |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for i, row in enumerate(rounds, 1):
        n = row["new"]
        codec = n.get("codec_cpu_ms_per_object", n.get("zstd_cpu_ms_per_object", "—"))
        out.append(f"| {i} | {row['load_avg_1m']:.1f} | {row['bare']['cpu_ms_per_object']} | "
                   f"{n['main_cpu_ms_per_object']} | {codec} | "
                   f"{n['workers_cpu_ms_per_object']} | {row['bare_cpu_share']:.2f} |")
    dtype = rounds[0]["new"].get("stored_dtype", "float32")
    out += ["", f"Median bare ÷ ingest CPU {r['median_bare_cpu_share']:.2f}, the store holding "
                f"{dtype} pixels. \"Of which compression\" compresses 1,024 of the stored "
                f"cutouts again, alone, as the store does (its codec, its chunks). The rest of "
                f"the main process's share is zarr's write path (files, the per-object "
                f"columns) and the catalog; the workers' share is the decode plus the checks "
                f"and the task traffic. A uint8 store keeps the decoded 8-bit pixels and "
                f"scales them on read: before it, the float32 cutouts' zstd alone took a "
                f"quarter to a third of the decode's CPU and the [0, 1] scaling another "
                f"seventh, and this ratio was 0.48-0.52.", ""]
    return out


def inference_section(r: dict) -> list[str]:
    rows = r["rows"]
    first = next(iter(rows))
    out = ["### CPU inference: `predict` by precision (GZ1, lite0, 64 px)", "",
           f"`tools/bench_inference.py --rounds {len(rows[first]['images_per_s'])}`: the whole "
           f"`predict` of {r['n']} objects of `{Path(r['store']).name}` with a "
           f"`tf_efficientnet_lite0` run trained on it, {r['threads']} torch/ORT thread, batch "
           f"{r['batch_size']}; {load_note(r['machine'])}. Accuracy on the labelled test split.",
           "", "| precision | images/s (rounds) | median | vs fp32 eager | test accuracy % | "
           "max abs Δp vs fp32 |", "|---|---|---:|---:|---:|---:|"]
    for p, row in rows.items():
        out.append(f"| {p} | {', '.join(map(str, row['images_per_s']))} | "
                   f"{row['median_images_per_s']} | {row[f'speedup_vs_{first}']:.2f} | "
                   f"{row['test_accuracy_pct']:.2f} (n={row['test_n']}) | "
                   f"{row[f'max_abs_prob_diff_vs_{first}']:.1e} |")
    out += ["", "The first `onnx` round includes the one-time export into the run directory "
                "(`model.onnx`, reused while the checkpoint is unchanged).", ""]
    return out


def frames_section(r: dict) -> list[str]:
    rounds = r["rounds"]
    out = ["### Frame ingest on a DES-sized compressed tile", "",
           f"`tools/bench_frames.py --side 4096 --n {r['n']} --old-n {r['old_n']} --rounds "
           f"{len(rounds)}`: {r['tile']} ({r['tile_mb_on_disk']} MB on disk), `ingest des "
           f"--bands g,r,i --size 64`, OMP_NUM_THREADS=1; {load_note(r['machine'])}. "
           f"Interleaved rounds (the order swaps every round). The old code (commit "
           f"{r['baseline']}) ran on the first {r['old_n']} objects: its cost per object does "
           f"not depend on how many there are.", "",
           "| round | load (1 min) | old ms/object | new ms/object | old objects/s | "
           "new objects/s | speed-up | old peak RSS MB | new peak RSS MB |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, row in enumerate(rounds, 1):
        o, n = row["old"], row["new"]
        out.append(f"| {i} | {row['load_avg_1m']:.1f} | {o['ms_per_object']} | "
                   f"{n['ms_per_object']} | {o['objects_per_s']} | {n['objects_per_s']} | "
                   f"{row['speedup']:.1f}× | {o['peak_rss_mb']} | {n['peak_rss_mb']} |")
    per = ", ".join(f"{row['speedup']:.1f}" for row in rounds)
    out += ["", f"Median speed-up {r['speedup']:.1f}× in objects/s (rounds: {per}); the new "
                f"ingest decodes in one worker process per core. Peak RSS is `/usr/bin/time "
                f"-v`'s: the largest single process (the interpreter with torch is about 0.7 GB "
                f"of it); each decode worker holds at most one decompressed frame per band, "
                f"here 3 × 64 MB (4096² float32); the first object's frames are decompressed once "
                f"in the ingest process before the workers fork and shared by them (their pages "
                f"count in every process's RSS), so decompressed pixels take at most "
                f"2 × 192 MB in all here.", ""]
    return out


def memory_section(r: dict) -> list[str]:
    out = ["### `predict` peak memory against catalog size", "",
           f"`tools/predict_memory.py` (default precision, i.e. ONNX Runtime; format "
           f"{r['format']}, batch {r['batch_size']}):", "",
           "| objects | peak RSS MB | seconds |", "|---:|---:|---:|"]
    if "machine" not in r:
        out.insert(2, "(Measured in an earlier session; that script records no load average.)")
        out.insert(3, "")
    out += [f"| {x['n']} | {x['peak_rss_mb']} | {x['seconds']} |" for x in r["results"]]
    out += ["", f"Growth {r['growth']:+.1%} ({r['verdict']}: within 10 %).", ""]
    return out


def gpu_section(r: dict | None) -> list[str]:
    if r is None or r.get("smoke"):
        return ["### GPU path", "",
                "No GPU was lent to this work, so no GPU figure exists here. `tools/bench_gpu.sh`"
                " (ingest → train lite0 10 epochs on 4,800 GZ1 objects → predict 1M cutouts, "
                "bf16, one table) is ready for one; its `--device cpu --smoke` mode runs in the "
                "test suite (tests/test_bench_gpu.py).", ""]
    out = ["### GPU path", "", f"`tools/bench_gpu.sh` on {r['machine'].get('gpu')}:", "",
           "| step | objects | seconds | objects/s |", "|---|---:|---:|---:|"]
    out += [f"| {x['step']} | {x['n']} | {x['seconds']} | {x['per_s']} |" for x in r["rows"]]
    return out + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--note", default="", help="a sentence on the machine's state, printed "
                                                   "under the introduction")
    ap.add_argument("--rerun", default="",
                    help="comma-separated result files measured again in this regeneration "
                         "(named in the introduction; the others are kept from before)")
    args = ap.parse_args()
    parts = [BEGIN, "## Survey-scale throughput", "",
             "Measured on a 2-core machine that is often shared with other jobs (the load "
             "averages are in each table's caption): read the side-by-side ratios, not the "
             "absolute numbers.", ""]
    if args.rerun:
        kept = [n for n in ("ingest_images.json", "ingest_cpu.json", "frames.json",
                            "inference.json", "predict_memory.json")
                if n not in args.rerun.split(",")]
        parts += [f"Rerun for this version: {args.rerun.replace(',', ', ')}; kept from the "
                  f"previous measurement: {', '.join(kept) or 'none'}.", ""]
    if args.note:
        parts += [args.note, ""]
    for name, fn in (("ingest_images.json", ingest_section),
                     ("ingest_cpu.json", ingest_cpu_section), ("frames.json", frames_section),
                     ("inference.json", inference_section),
                     ("predict_memory.json", memory_section)):
        r = load(args.results, name)
        parts += fn(r) if r else [f"({name} missing: not measured in this run)", ""]
    parts += gpu_section(load(args.results, "gpu.json"))
    parts.append(END)
    text = args.doc.read_text()
    block = "\n".join(parts)
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        marker = "## Ingest (objects/s)"
        text = text.replace(marker, block + "\n\n" + marker, 1) if marker in text else \
            text.rstrip() + "\n\n" + block + "\n"
    args.doc.write_text(text)
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
