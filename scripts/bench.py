"""Run every lesson under one profile and write a table: wall time, peak memory, headline numbers.

    python scripts/bench.py --profile cpu            (or: make bench PROFILE=cpu)
    python scripts/bench.py --profile smoke --lessons 03 04

Each lesson runs top to bottom in a fresh kernel, read from its MyST source, in the lessons
folder (as the site build runs it). Wall time is measured around the whole notebook (kernel
start included); peak memory is the kernel's largest resident set, sampled every 0.1 s. The
headline numbers are the lines the lesson printed with ``course_lib.runtime.headline``. The
table goes to ``bench/<profile>.md`` (and is shown on the site's page "Run times"); the times
also go to ``course_lib/measured_times.json``, from which every lesson's first cell prints
its own measured times. Each lesson runs with an empty cache (``COURSE_DATA_DIR`` set to a
fresh folder), so the time is a first run's: nothing is reloaded from a checkpoint.

Budgets (the course's targets on a 2-core machine): every lesson within 20 s under smoke and
5 min under cpu. A lesson over its budget is named and the command exits 1. Measure on a quiet
machine: on 2 cores, a lesson timed while other work runs is not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import jupytext
import psutil
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
BUDGET_S = {"smoke": 20.0, "cpu": 300.0, "gpu": 600.0}
HEADLINE = re.compile(r"^★ (.+?) = (.+)$", re.M)


def lessons(selected: list[str] | None = None) -> list[Path]:
    found = sorted(LESSONS.glob("[0-9][0-9]_*.md"))
    if selected:
        found = [p for p in found if any(p.name.startswith(s) for s in selected)]
    return found


def run_lesson(path: Path, profile: str, timeout: int) -> dict:
    nb = jupytext.read(path, fmt="md:myst")
    os.environ["COURSE_PROFILE"] = profile
    os.environ["COURSE_PROGRESS"] = "0"
    # A first run's time: an empty cache, so that no checkpoint is reloaded and nothing downloaded
    # earlier is reused (the classifier of lesson 9, say). The folder is removed afterwards.
    fresh = tempfile.mkdtemp(prefix="bench-cache-")
    os.environ["COURSE_DATA_DIR"] = fresh
    # every train.fit call logs its steps, time and one counted step (course_lib/stepcost.py),
    # from which scripts/gpu_estimate.py estimates the lesson on a T4
    fit_log = os.path.join(fresh, "fits.jsonl")
    os.environ["COURSE_FIT_LOG"] = fit_log
    km = None
    if os.environ.get("BENCH_TRANSPORT") == "ipc":  # lanes started at once can race for TCP ports; sockets cannot
        from jupyter_client.manager import KernelManager

        km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(fresh, "kernel"))
    client = NotebookClient(nb, km=km, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(LESSONS)}})
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                pid = client.km.provisioner.process.pid  # type: ignore[union-attr]
                proc = psutil.Process(pid)
                rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
                peak[0] = max(peak[0], rss)
            except Exception:
                pass
            stop.wait(0.1)

    start = time.perf_counter()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    error = detail = ""
    try:
        client.execute()
    except Exception as err:  # the table says which lesson failed and why; the exit code too
        error = str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__
        text = str(err)
        detail = text if len(text) <= 6000 else text[:3000] + "\n[...]\n" + text[-3000:]  # the cell and its traceback
    finally:
        stop.set()
        thread.join()
    wall = time.perf_counter() - start
    fits = [json.loads(line) for line in Path(fit_log).read_text().splitlines()] if os.path.exists(fit_log) else []
    shutil.rmtree(fresh, ignore_errors=True)
    os.environ.pop("COURSE_DATA_DIR", None)
    os.environ.pop("COURSE_FIT_LOG", None)
    text = "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "stream"
    )
    return {"lesson": path.stem, "wall": wall, "peak_mib": peak[0] / 2**20, "headlines": HEADLINE.findall(text),
            "error": error, "detail": detail, "fits": fits, **machine()}


def machine() -> dict:
    """What the run was measured on (kept in each row, so that rows merged from another machine say so)."""
    import torch

    gpu = torch.cuda.is_available()
    return {"machine": torch.cuda.get_device_name(0) if gpu else f"{os.cpu_count()}-core CPU",
            "device": "cuda (" + torch.cuda.get_device_name(0) + ")" if gpu else "cpu",
            "cores": os.cpu_count(), "arch": platform.machine(), "torch": torch.__version__}


def table(rows: list[dict], profile: str, note: str = "") -> str:
    here = machine()
    first = {**here, **{k: rows[0][k] for k in here if rows and k in rows[0]}}
    when = max((r.get("date", "") for r in rows), default="") or time.strftime("%Y-%m-%d")
    lines = [
        f"Profile **{profile}**, measured {when} on {first['arch']} with "
        f"{first['cores']} cores, device {first['device']}, torch {first['torch']}; budget {BUDGET_S[profile]:.0f} s a lesson."
        + (f" {note}" if note else ""),
        "",
        "| lesson | wall time (s) | peak memory (MiB) | within budget | headline numbers |",
        "|---|---:|---:|---|---|",
    ]
    dated = len({r.get("date") for r in rows}) > 1  # rows measured on different days say when
    for r in rows:
        ok = "no (failed)" if r["error"] else ("yes" if r["wall"] <= BUDGET_S[profile] else "**no**")
        heads = "<br>".join(f"{k} = {v}" for k, v in r["headlines"]) or ("error: " + r["error"] if r["error"] else "")
        heads = heads.replace("|", "\\|")  # a | in a label would end the table cell
        lesson = r["lesson"] + (f" ({r['date']})" if dated else "")
        lines.append(f"| {lesson} | {r['wall']:.1f} | {r['peak_mib']:.0f} | {ok} | {heads} |")
    total = sum(r["wall"] for r in rows)
    lines += ["", f"All lessons: {total:.0f} s ({total / 60:.1f} min)."]
    return "\n".join(lines) + "\n"


def record_times(rows: list[dict], profile: str) -> None:
    """Write the wall times into course_lib/measured_times.json, which ships with the package:
    every lesson's first cell prints its measured times from there (runtime.setup(lesson=...))."""
    path = ROOT / "course_lib" / "measured_times.json"
    table = json.loads(path.read_text()) if path.exists() else {}
    here = machine()["machine"]
    for r in rows:
        if not r["error"]:
            table.setdefault(profile, {})[r["lesson"]] = {
                "seconds": round(r["wall"], 1), "date": r.get("date") or time.strftime("%Y-%m-%d"),
                "machine": r.get("machine", here)}
    path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")


def record_fits(rows: list[dict], profile: str) -> None:
    """Keep each lesson's fit log for ``scripts/gpu_estimate.py`` in ``bench/fits-<profile>.json``:
    lesson -> the run's wall time, date, machine and fit calls, all from the same run (a failed
    run keeps the lesson's earlier entry; rows merged from elsewhere carry no log)."""
    path = ROOT / "bench" / f"fits-{profile}.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    for r in rows:
        if not r["error"] and "fits" in r:
            kept[r["lesson"]] = {"wall": round(r["wall"], 1), "date": time.strftime("%Y-%m-%d"),
                                 "machine": r.get("machine", ""), "fits": r["fits"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(kept, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def merged_rows(rows: list[dict], profile: str) -> list[dict]:
    """This run's rows merged with the earlier runs' rows of the other lessons (``--lessons``).

    The rows are kept in ``bench/<profile>.json`` beside the table; a lesson that no longer
    exists is dropped, and each row keeps the date it was measured on.
    """
    path = ROOT / "bench" / f"{profile}.json"
    kept = {r["lesson"]: r for r in json.loads(path.read_text())} if path.exists() else {}
    today = time.strftime("%Y-%m-%d")
    for r in rows:
        kept[r["lesson"]] = {**{k: v for k, v in r.items() if k != "fits"}, "date": r.get("date") or today,
                             "headlines": [list(h) for h in r["headlines"]]}
    existing = {p.stem for p in lessons()}
    merged = [kept[k] for k in sorted(kept) if k in existing]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=1) + "\n", encoding="utf-8")
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=sorted(BUDGET_S))
    parser.add_argument("--lessons", nargs="*", help="lesson numbers to run (default: all), e.g. 03 04")
    parser.add_argument("--out", type=Path, help="where to write the table (default bench/<profile>.md)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                        help="run nothing: merge rows measured elsewhere (another machine's bench/<profile>.json)")
    parser.add_argument("--note", default="", help="a sentence for the table's first line (how it was measured)")
    args = parser.parse_args(argv)
    rows = []
    if args.merge:
        rows = [r for f in args.merge for r in json.loads(f.read_text())]
        rows = [r for r in rows if not args.lessons or any(r["lesson"].startswith(s) for s in args.lessons)]
    for path in ([] if args.merge else lessons(args.lessons)):
        row = run_lesson(path, args.profile, args.timeout)
        rows.append(row)
        status = f"FAILED: {row['error']}" if row["error"] else "ok"
        print(f"{path.stem}: {row['wall']:.1f} s, peak {row['peak_mib']:.0f} MiB, {status}", flush=True)
        if row["error"]:
            print(row["detail"], file=sys.stderr, flush=True)
        for k, v in row["headlines"]:
            print(f"    {k} = {v}")
    if not args.out:
        record_times(rows, args.profile)
        if args.profile != "smoke":  # the gpu estimate reads the cpu log; smoke's tiny runs say little
            record_fits(rows, args.profile)
        rows = merged_rows(rows, args.profile)
    out = args.out or ROOT / "bench" / f"{args.profile}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table(rows, args.profile, args.note), encoding="utf-8")
    print(f"wrote {out}")
    over = [r["lesson"] for r in rows if r["wall"] > BUDGET_S[args.profile]]
    failed = [r["lesson"] for r in rows if r["error"]]
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    if over:
        print(f"OVER THE {args.profile} BUDGET OF {BUDGET_S[args.profile]:.0f} s: {', '.join(over)}")
    return 1 if over or failed else 0


if __name__ == "__main__":
    sys.exit(main())
