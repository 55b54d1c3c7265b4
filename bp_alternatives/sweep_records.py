"""A sweep's bookkeeping: one JSON line per job in ``sweep_summary.jsonl``, read back
(with the run directories) into ``sweep_summary.md``.

A job appends its line under a lock (:func:`record`). :func:`read_records` survives
a damaged file: a line that is not a job's JSON record (a disk that filled up
mid-append, any garbage) is skipped with a warning, and every job directory without
a line is rebuilt from its ``results.json`` (``no record`` when it has none: a job
killed before it could write). Job directories are found at any depth, so a sweep
whose override values contain ``/`` (``data.root=data/a``) is counted too.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from typing import Any

from bp_alternatives import results as results_io
from bp_alternatives.atomic import write_atomic

SUMMARY_JSONL = "sweep_summary.jsonl"
SUMMARY_MD = "sweep_summary.md"
_FIELDS = ("job", "dir", "status")  # what a line must have to be a job's record
_NOT_JOBS = {".hydra", "compare", "wandb"}  # folders that are never job directories


def record(ctx: Any, results: dict[str, Any], seconds: float) -> None:
    """Append the job's outcome to ``<sweep dir>/sweep_summary.jsonl`` (locked);
    ``ctx``: the job's :class:`bp_alternatives.sweep.JobContext`. On several hosts
    only the first writes."""
    import jax

    if jax.process_index() != 0:
        return
    out_dir = ctx.out_dir
    if isinstance(results.get("seed"), int) and os.path.isdir(
        seed_dir := os.path.join(out_dir, f"seed={results['seed']}")
    ):
        out_dir = seed_dir
    line = {
        "job": ctx.num,
        "dir": os.path.relpath(out_dir, ctx.sweep_dir),
        "overrides": ctx.overrides,
        "status": results.get("status"),
        "test_accuracy": (results.get("final") or {}).get("test_accuracy"),
        "error": results.get("error"),
        "seconds": round(seconds, 3),
    }
    os.makedirs(ctx.sweep_dir, exist_ok=True)
    with open(os.path.join(ctx.sweep_dir, SUMMARY_JSONL), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.write(json.dumps(line) + "\n")
            f.flush()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_lines(path: str) -> dict[str, dict[str, Any]]:
    """The good lines of ``sweep_summary.jsonl`` by run dir (the last one wins); a
    damaged line is skipped with a warning naming the file and the line."""
    records: dict[str, dict[str, Any]] = {}
    if not os.path.exists(path):
        return records
    with open(path, errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                if not isinstance(r, dict) or any(k not in r for k in _FIELDS):
                    raise ValueError(f"not a job record: {line.strip()[:60]!r}")
                if not isinstance(r["dir"], str):
                    raise ValueError(f"'dir' is {r['dir']!r}")
            except ValueError as e:
                print(
                    f"sweep: warning: {path} line {n} is damaged ({e}); skipped, the "
                    "run directories are read instead",
                    file=sys.stderr,
                )
                continue
            records[r["dir"]] = r
    return records


def job_dirs(sweep_dir: str) -> list[str]:
    """Every job directory under ``sweep_dir`` (one with Hydra's ``.hydra/``),
    relative to it, at any depth."""
    found = []
    for root, dirs, _ in os.walk(sweep_dir):
        if ".hydra" in dirs and root != sweep_dir:
            found.append(os.path.relpath(root, sweep_dir))
        dirs[:] = sorted(d for d in dirs if d not in _NOT_JOBS)
    return found


def _rebuilt(sweep_dir: str, job: str) -> list[dict[str, Any]]:
    """The records of a job directory with no line: from its ``results.json`` (the
    job's own, or one per ``seed=<s>/``), else one ``no record`` entry."""
    out = []
    top = os.path.join(sweep_dir, job)
    subs = sorted(d for d in os.listdir(top) if d.startswith("seed="))
    for d in [job] + [os.path.join(job, s) for s in subs]:
        path = os.path.join(sweep_dir, d, results_io.FILENAME)
        if not os.path.exists(path):
            continue
        try:
            r = results_io.read(path)
        except results_io.ResultsError as e:
            out.append(_entry(d, "failed", str(e)))
            continue
        acc = r.final.get("test_accuracy")
        out.append(_entry(d, r.status, r.error, acc))
    if not out:
        why = "the job left no record (killed, or crashed outside Python?)"
        out.append(_entry(job, "no record", why))
    return out


def _entry(d: str, status: str, error: str | None, acc: Any = None):
    return {
        "job": None,
        "dir": d,
        "overrides": [],
        "status": status,
        "test_accuracy": acc,
        "error": error,
    }


def read_records(sweep_dir: str) -> list[dict[str, Any]]:
    """The jobs' lines of ``sweep_summary.jsonl`` (the last line per run dir wins),
    plus, for every job directory without one, its rebuilt record
    (:func:`_rebuilt`)."""
    records = _read_lines(os.path.join(sweep_dir, SUMMARY_JSONL))
    for job in job_dirs(sweep_dir):
        if not any(d == job or d.startswith(job + os.sep) for d in records):
            records.update({r["dir"]: r for r in _rebuilt(sweep_dir, job)})

    def order(r):
        job = r["job"] if isinstance(r["job"], int) else None
        return (job is None, job or 0, r["dir"])

    return sorted(records.values(), key=order)


def summarise(sweep_dir: str) -> tuple[str, list[dict[str, Any]]]:
    """Write ``sweep_summary.md``; return its text and the records that did not
    finish (``failed`` or ``no record``)."""
    records = read_records(sweep_dir)
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    bad = [r for r in records if r["status"] not in ("ok", "diverged")]
    head = f"{len(records)} runs: " + ", ".join(
        f"{counts.get(s, 0)} {s}"
        for s in ("ok", "diverged", "failed", "no record")
        if counts.get(s, 0) or s in ("ok", "failed")
    )
    lines = [
        f"# Sweep summary: {sweep_dir}",
        "",
        head,
        "",
        "| job | run directory | status | test accuracy | error |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in records:
        acc = r.get("test_accuracy")
        err = (r.get("error") or "").replace("\n", " ").replace("|", "\\|")
        lines.append(
            f"| {'' if r['job'] is None else r['job']} | {r['dir']} | {r['status']} | "
            f"{'' if acc is None else f'{acc:.4f}'} | {err} |"
        )
    text = "\n".join(lines) + "\n"
    write_atomic(os.path.join(sweep_dir, SUMMARY_MD), text)
    return head, bad
