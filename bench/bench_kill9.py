"""The orchestrator killed with SIGKILL at 20 random points of one campaign, resumed after each:
`dgm archive check` must stay clean, no recorded node may be lost or change its commit, every
admitted node stays admitted, and the final run holds exactly the target number of attempts.

A scripted model over real HTTP answers instantly (a new program each time), real circle-packing
evaluations in the real sandbox. Writes bench/results/kill9.json.
Run:  .venv/bin/python bench/bench_kill9.py [--kills 20] [--iterations 300]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archive import Archive, NodeStatus  # noqa: E402
from tests.campaign_helpers import distinct_grids, write_config  # noqa: E402
from tests.fm_server import ScriptedFMServer  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "kill9.json"
DGM = [sys.executable, "-m", "orchestrator.cli"]


def snapshot(run_dir: Path) -> dict[int, tuple[str, str]]:
    if not (run_dir / "archive.db").exists():
        return {}
    with Archive.open(run_dir, readonly=True) as a:
        return {n.id: (n.commit, n.status.value) for n in a.nodes()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="dgm-kill9-"))
    env = {**os.environ, "DGM_TEST_KEY": "k"}
    problems: list[str] = []
    kills = []
    with ScriptedFMServer(responder=distinct_grids(delay=0.05)) as srv:
        cfg = write_config(tmp, srv.base_url, iterations=args.iterations)
        run_dir = tmp / "run"
        for k in range(args.kills):
            before = snapshot(run_dir)
            proc = subprocess.Popen([*DGM, "run", str(cfg), "--no-live"], env=env, cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            delay = rng.uniform(0.5, 6.0)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)  # the kill point is a random time, by design
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # it finished first: this point was the end of the run
                pass
            proc.wait()
            after = snapshot(run_dir)
            lost = sorted(set(before) - set(after))
            changed = sorted(i for i in before if i in after and before[i][0] != after[i][0])
            unadmitted = sorted(i for i in before if before[i][1] == "admitted" and after.get(i, ("", ""))[1] != "admitted")
            check = subprocess.run([*DGM, "archive", "check", str(run_dir)], env=env, cwd=ROOT, capture_output=True, text=True)
            kills.append({"after_s": round(delay, 2), "nodes": len(after), "check_ok": check.returncode == 0})
            if lost or changed or unadmitted or check.returncode != 0:
                problems.append(f"kill {k}: lost {lost}, commit changed {changed}, no longer admitted {unadmitted}, "
                                f"check: {check.stdout.strip()[-200:]} {check.stderr.strip()[-200:]}")
            print(f"kill {k + 1}/{args.kills} after {delay:.1f} s: {len(after)} nodes, check "
                  f"{'ok' if check.returncode == 0 else 'FAILED'}", flush=True)
        final = subprocess.run([*DGM, "run", str(cfg), "--no-live"], env=env, cwd=ROOT, capture_output=True, text=True)
    nodes = snapshot(run_dir)
    with Archive.open(run_dir, readonly=True) as a:
        unfinished = [n.id for n in a.nodes() if not n.status.finished]
    ok = (not problems and final.returncode == 0 and sorted(nodes) == list(range(args.iterations + 1)) and not unfinished)
    result = {
        "kills": args.kills, "iterations": args.iterations, "ok": ok, "problems": problems,
        "final_nodes": len(nodes), "unfinished_after_resume": unfinished,
        "statuses": {s.value: sum(1 for _, st in nodes.values() if st == s.value) for s in NodeStatus},
        "kill_points": kills,
        "how": "bench/bench_kill9.py: dgm run in its own session, SIGKILL to the group at a random time in "
               "0.5-6 s, archive snapshot before and after, dgm archive check; then one uninterrupted resume",
    }
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("ok", "final_nodes", "problems", "unfinished_after_resume")}))


if __name__ == "__main__":
    main()
