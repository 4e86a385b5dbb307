"""Runs started at once on one output (docs/scheduling.md, "One run at a time").

    concurrency.py SEGFLOW_BIN WORK_DIR [RUNS]

1. RUNS runs (default 5) start together without --wait: one takes the lease and publishes, the
   others exit 4 and name the holder (one that starts after the holder ended may publish too);
   the tables are exactly those of the published runs made one by one.
2. RUNS runs start together with --wait, as_of alternating between two dates: all succeed, one
   after another. Every table's Delta versions are contiguous (0, 1, 2, ...), and every version
   of every table equals the same version of the same runs made one by one, in the order the
   lease gave them (from their manifests) on another output: no version mixes two runs.

Exits 1 at the first violation; prints its figures.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from kill_loop import PIPELINE, content, tables

DATES = ["2025-06-01", "2025-03-01"]


def start(bin_: str, inp: Path, out: Path, as_of: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [bin_, "run", PIPELINE, "--var", f"input={inp}", "--var", f"output={out}",
         "--var", f"as_of={as_of}", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def manifests(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "_runs").glob("[0-9]*.json"))]


def versions(table: Path) -> list[int]:
    return sorted(int(p.stem) for p in (table / "_delta_log").glob("*.json"))


def same_as_one_by_one(bin_: str, inp: Path, out: Path, ref: Path) -> int | None:
    """Replays the succeeded runs of `out` one by one on `ref`, in the order they held the lease
    (their ends: a run starts before it waits for the lease), and checks that every table has
    contiguous versions, each equal to the same version made one by one. Returns the versions
    checked, or None after printing the first difference."""
    done = [m for m in manifests(out) if m["status"] == "succeeded"]
    for m in sorted(done, key=lambda m: m["finished_at"]):
        r = subprocess.run(
            [bin_, "run", PIPELINE, "--var", f"input={inp}", "--var", f"output={ref}",
             "--var", f"as_of={m['vars']['as_of']}"], capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stderr)
            return None
    checked = 0
    for t in tables(out):
        vs = versions(out / t)
        if vs != list(range(len(vs))):
            print(f"{t}: Delta versions {vs} are not contiguous")
            return None
        if vs != versions(ref / t):
            print(f"{t}: versions {vs}, one by one {versions(ref / t)}")
            return None
        for v in vs:
            if content(str(out / t), v) != content(str(ref / t), v):
                print(f"{t} version {v} differs from the same runs made one by one")
                return None
            checked += 1
    return checked


def main() -> int:
    bin_, work = sys.argv[1], Path(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    subprocess.run(["rm", "-rf", str(work)], check=True)
    inp = work / "in"
    subprocess.run([bin_, "generate", "--customers", "300", "--seed", "9", "--out", str(inp)],
                   check=True, capture_output=True)

    # 1. Together, without --wait.
    out = work / "together"
    procs = [start(bin_, inp, out, DATES[0]) for _ in range(n)]
    codes, errors = [], []
    for p in procs:
        errors.append(p.stderr.read())
        codes.append(p.wait())
    if sorted(set(codes)) not in ([0], [0, 4]):
        print(f"exit codes {codes}: expected 0 for the lease holder and 4 for the others")
        for e in errors:
            print(e)
        return 1
    refused = [e for c, e in zip(codes, errors) if c == 4]
    if not all("is in use by run" in e for e in refused):
        print("a refused run does not name the holder:\n" + "\n".join(refused))
        return 1
    checked = same_as_one_by_one(bin_, inp, out, work / "together-one-by-one")
    if checked is None:
        return 1
    print(f"concurrency: {n} runs at once without --wait: {codes.count(0)} published, "
          f"{codes.count(4)} exited 4 naming the holder; all {checked} table versions equal the "
          f"published runs made one by one")

    # 2. Together, with --wait, two dates.
    out = work / "waiting"
    t0 = time.monotonic()
    procs = [start(bin_, inp, out, DATES[i % 2], "--wait") for i in range(n)]
    codes = [p.wait() for p in procs]
    seconds = time.monotonic() - t0
    if codes != [0] * n:
        print(f"with --wait, exit codes {codes}: every run should succeed in turn")
        return 1
    order = [m["vars"]["as_of"] for m in sorted(manifests(out), key=lambda m: m["finished_at"])]
    checked = same_as_one_by_one(bin_, inp, out, work / "waiting-one-by-one")
    if checked is None:
        return 1
    print(f"concurrency: {n} runs at once with --wait (as_of {order}) all succeeded, one "
          f"after another, in {seconds:.1f}s; every table's versions contiguous; all {checked} "
          f"versions of {len(tables(out))} tables equal the same runs made one by one")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # deltalake's native threads can abort the interpreter's shutdown ("terminate called
    # without an active exception"): leave without it.
    os._exit(code)
