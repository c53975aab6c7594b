"""Corpus cases for job folders (issue 16, items 5 and 6).

A seed job (`train --seeds N`: seeds.json + seed_<s>/) and a recursive job (`--recursive K`:
rounds.jsonl + round_<k>/) are folders of ordinary runs. Built here from copies of the
workspace's one-epoch run, they are given to the commands that take one run (a one-line
error naming a member to pass instead) and, with a member's checkpoints overwritten by
text, to `evaluate`, which reads every member (a one-line error naming that member's file,
before any member's report is written). Float16 overflow is not a corpus case: every
built-in survey scales pixels to [0, 1] first; tests/test_reliability_units.py covers it.
"""
from __future__ import annotations

import json
from pathlib import Path

from corpus import Case, Prepared, Workspace, run_argv


def seed_job(ws: Workspace, d: Path) -> Path:
    job = d / "job"
    job.mkdir()
    for s in (0, 1):
        ws.copy_run(job / f"seed_{s}")
    (job / "seeds.json").write_text(json.dumps({"seeds": [0, 1], "runs": ["seed_0", "seed_1"]}))
    return job


def recursive_job(ws: Workspace, d: Path) -> Path:
    job = d / "job"
    job.mkdir()
    ws.copy_run(job / "round_0")
    (job / "rounds.jsonl").write_text(json.dumps({"round": 0, "run": "round_0"}) + "\n")
    return job


def _garbage_member(job: Path) -> None:
    for name in ("best.pt", "last.pt"):
        (job / "seed_1" / name).write_text("not a checkpoint: an interrupted copy\n")


def _job_case(name: str, what: str, make, command: str, needles: tuple[str, ...],
              damage=None) -> Case:
    def build(ws: Workspace, d: Path) -> Prepared:
        job = make(ws, d)
        if damage is not None:
            damage(job)
        return Prepared(run_argv(command, ws, d, job))
    return Case(name, command, what, "error", build, needles)


def job_folder_cases() -> list[Case]:
    cases = []
    for command in ("predict", "embed"):
        cases.append(_job_case("seed-job", "a seed job folder (seeds.json, seed_0/, seed_1/) "
                               "given where one run is expected", seed_job, command,
                               ("job", "seeds job", "seed_0")))
        cases.append(_job_case("recursive-job", "a recursive job folder (rounds.jsonl, "
                               "round_0/) given where one run is expected", recursive_job,
                               command, ("job", "recursive job", "round_0")))
    cases.append(_job_case("seed-job-member-garbage", "a seed job whose seed_1 checkpoints "
                           "are text (an interrupted copy)", seed_job, "evaluate",
                           ("seed_1", ".pt", "corrupt"), damage=_garbage_member))
    return cases
