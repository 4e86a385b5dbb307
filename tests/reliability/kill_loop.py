"""The kill loop: runs of the default pipeline SIGKILLed at random moments, and after each kill
proof that nothing half-published is visible (docs/scheduling.md).

    kill_loop.py SEGFLOW_BIN WORK_DIR KILLS [SEED]

Every iteration runs the pipeline on one output with as_of alternating between two dates, and
kills it: at a random time (a third of the kills), when a random stage starts (a third), or
when a random table starts publishing or has just published (a third). Then:

- every Delta table of the output reads cleanly, and equals exactly the same table either
  before the killed run or after that run completed (computed on a copy of the output as it
  was before, run to the end): never a mix, never part of a table;
- `_runs/_published.json` names the run before or the killed run, and every table read at the
  version it names equals that run's table;
- the next run (with --wait, for the killed run's lease to expire) succeeds, and publishes
  exactly the completed run's tables. Every other time it is `--resume` of the killed run
  (docs/scheduling.md, "Resume"): it reuses the stages the killed run finished, commits what
  the killed run had not committed, and nothing twice.

It prints how many kills fell in each phase and how the tables stood after them, and exits 1 at
the first violation.
"""

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from deltalake import DeltaTable

PIPELINE = "pipelines/customer_segmentation.yaml"
DATES = ["2025-06-01", "2025-03-01"]
LEASE = ["--lease-ttl", "1s"]


def tables(out: Path) -> list[str]:
    """Every Delta table under an output, as a path relative to it."""
    return sorted(str(p.parent.relative_to(out)) for p in out.rglob("_delta_log"))


def content(url: str, version: int | None = None) -> list[tuple] | None:
    """A table's rows, sorted, as text; None when there is no table there."""
    if not (Path(url) / "_delta_log").exists():
        return None
    t = DeltaTable(url, version=version).to_pyarrow_table()
    cols = sorted(t.column_names)
    rows = zip(*[t.column(c).to_pylist() for c in cols]) if cols else []
    return [tuple(cols)] + sorted(tuple(repr(v) for v in r) for r in rows)


def state(out: Path) -> dict[str, list | None]:
    return {t: content(str(out / t)) for t in tables(out)}


def pointer(out: Path) -> dict | None:
    p = out / "_runs" / "_published.json"
    return json.loads(p.read_text()) if p.exists() else None


def run(bin_: str, inp: Path, out: Path, as_of: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [bin_, "run", PIPELINE, "--var", f"input={inp}", "--var", f"output={out}",
         "--var", f"as_of={as_of}", *LEASE, *extra],
        capture_output=True, text=True)


def killed_run(bin_: str, inp: Path, out: Path, as_of: str, rng: random.Random,
               full_seconds: float) -> tuple[str | None, str]:
    """Starts a run and SIGKILLs it; returns its run id (if it got one) and the phase it was
    in: the last event it logged."""
    mode = rng.choice(["time", "stage", "publish"])
    proc = subprocess.Popen(
        [bin_, "run", PIPELINE, "--var", f"input={inp}", "--var", f"output={out}",
         "--var", f"as_of={as_of}", "--log-format", "json", *LEASE],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + rng.uniform(0, full_seconds)
    stage_target = rng.randint(1, 21)
    publish_target = rng.randint(1, 28)
    run_id, phase, stages, publishes = None, "start", 0, 0
    if mode == "time":
        # Read the log in a thread-free way: poll until the deadline, then kill.
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        proc.kill()
        log = proc.stderr.read()
        for line in log.splitlines():
            event = json.loads(line)
            run_id = run_id or event.get("run_id")
            if event["event"] != "log":
                phase = event["event"]
    else:
        for line in proc.stderr:
            event = json.loads(line)
            run_id = run_id or event.get("run_id")
            if event["event"] == "log":
                continue
            phase = event["event"]
            stages += phase == "stage_started"
            publishes += phase in ("publish_started", "published")
            if (mode == "stage" and stages == stage_target) or (
                    mode == "publish" and publishes == publish_target):
                proc.kill()
                break
        proc.kill()
        proc.stderr.close()
    proc.wait()
    if proc.returncode == 0:
        phase = "finished"
    return run_id, phase


def main() -> int:
    bin_, work, kills = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 2026)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    inp, out = work / "in", work / "out"
    subprocess.run([bin_, "generate", "--customers", "300", "--seed", "7", "--out", str(inp)],
                   check=True, capture_output=True)
    # A first complete run, timed: kills by time fall within a run's length.
    started = time.monotonic()
    first = run(bin_, inp, out, DATES[1])
    full_seconds = time.monotonic() - started
    if first.returncode != 0:
        print(first.stderr)
        return 1
    phases: dict[str, int] = {}
    outcomes = {"unchanged": 0, "before": 0, "after": 0, "absent": 0}
    pointer_moved = 0
    resumes = {"resumed": 0, "stages reused": 0, "mid-publish": 0, "not started": 0}
    t0 = time.monotonic()
    for i in range(kills):
        as_of = DATES[i % 2]
        before_dir, after_dir = work / "before", work / "after"
        for d in (before_dir, after_dir):
            shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(out, before_dir)
        before_pointer = pointer(out)
        run_id, phase = killed_run(bin_, inp, out, as_of, rng, full_seconds)
        phases[phase] = phases.get(phase, 0) + 1
        # What the killed run would have published: the same run, on a copy, to the end.
        shutil.copytree(before_dir, after_dir)
        done = run(bin_, inp, after_dir, as_of, "--wait")
        if done.returncode != 0:
            print(f"kill {i}: the reference run failed:\n{done.stderr}")
            return 1
        before, after, now = state(before_dir), state(after_dir), state(out)
        for t in sorted(set(now) | set(after)):
            got = now.get(t)
            if got is not None and got == after.get(t) == before.get(t):
                outcomes["unchanged"] += 1
            elif got is not None and got == after.get(t):
                outcomes["after"] += 1
            elif got == before.get(t):
                outcomes["before" if got is not None else "absent"] += 1
            else:
                print(f"kill {i} ({phase}, as_of {as_of}): table {t} is neither the one before "
                      f"the run nor the one it publishes: "
                      f"{len(got or []) - 1} rows against {len(before.get(t) or []) - 1} before "
                      f"and {len(after.get(t) or []) - 1} after")
                return 1
        p = pointer(out)
        if p != before_pointer:
            if p is None or p["run_id"] != run_id:
                print(f"kill {i}: _published.json names {p and p['run_id']}, neither the run "
                      f"before ({before_pointer and before_pointer['run_id']}) nor the killed "
                      f"one ({run_id})")
                return 1
            pointer_moved += 1
            expected = after
        else:
            expected = before
        for name, entry in (p or {}).get("tables", {}).items():
            rel = next(t for t in expected if entry["url"].rstrip("/").endswith("/" + t))
            if content(str(out / rel), entry["version"]) != expected[rel]:
                print(f"kill {i}: {name} at the version _published.json names "
                      f"({entry['version']}) is not that run's table")
                return 1
        # The next run succeeds, once the killed run's lease has expired, and publishes
        # exactly what the completed run did; every other one resumes the killed run.
        resumed = i % 2 == 1 and run_id is not None and phase != "finished"
        if resumed:
            again = run(bin_, inp, out, as_of, "--wait", "--resume", run_id)
            if again.returncode == 2 and "does not exist" in again.stderr:
                # Killed before it had written its record: there is nothing to resume.
                resumes["not started"] += 1
                again = run(bin_, inp, out, as_of, "--wait")
            elif again.returncode == 0:
                m = json.loads((out / "_runs" / f"{run_id}.json").read_text())
                reused = sum(st["reused"] for st in m["stages"])
                resumes["resumed"] += 1
                resumes["stages reused"] += reused
                resumes["mid-publish"] += phase in ("publish_started", "published")
        else:
            again = run(bin_, inp, out, as_of, "--wait")
        if again.returncode != 0:
            print(f"kill {i}: the run after the kill ({'resumed' if resumed else 'new'}) "
                  f"failed:\n{again.stderr}")
            return 1
        if state(out) != after:
            differ = [t for t in after if state(out).get(t) != after[t]]
            print(f"kill {i}: the run after the kill published other tables than a run "
                  f"without a kill: {differ}")
            return 1
        if (i + 1) % 10 == 0:
            print(f"  {i + 1}/{kills} kills, {time.monotonic() - t0:.0f}s", file=sys.stderr)
    print(f"kill loop: {kills} kills (a full run takes {full_seconds:.2f}s); "
          f"phase at the kill: {dict(sorted(phases.items()))}")
    print(f"  tables after a kill: {outcomes['before']} as before the run, {outcomes['after']} "
          f"as the run published them, {outcomes['unchanged']} that the run does not change, "
          f"{outcomes['absent']} not yet created; 0 mixed or partial")
    print(f"  _published.json: moved to the killed run {pointer_moved} times, otherwise named "
          f"the run before; every table at its versions was that run's")
    print(f"  the run after every kill succeeded and published what a run without a kill does; "
          f"{resumes['resumed']} of them resumed the killed run ({resumes['stages reused']} "
          f"stages reused, {resumes['mid-publish']} after a kill mid-publish), "
          f"{resumes['not started']} found nothing to resume (killed before it started)")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # deltalake's native threads can abort the interpreter's shutdown ("terminate called
    # without an active exception"): leave without it.
    os._exit(code)
