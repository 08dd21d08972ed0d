"""Archive across processes: a live reader while a campaign writes; kill -9 of the writer."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from archive import Archive, NodeStatus

ROOT = Path(__file__).resolve().parents[1]

READER = r"""
import json, sys, time
from archive import Archive
a = Archive.open(sys.argv[1], readonly=True)
want = int(sys.argv[2])
counts, errors, first = set(), [], True
deadline = time.time() + 30
while time.time() < deadline:
    nodes = a.nodes()
    ids = [n.id for n in nodes]
    if ids != list(range(len(ids))):
        errors.append(f"ids not consecutive: {ids}")
    last = nodes[-1]
    files = a.read_files(last.id)  # a visible row's code is always there
    if files != {"n.txt": str(last.id).encode()}:
        errors.append(f"node {last.id}: files {files}")
    counts.add(len(nodes))
    if first:
        print("ready", flush=True)
        first = False
    if len(nodes) == want:
        break
print(json.dumps({"counts": sorted(counts), "errors": errors}), flush=True)
"""

WRITER = r"""
import sys
from archive import Archive
run = sys.argv[1]
try:
    a = Archive.open(run)
    r = a.recover()
    print("recovered", r.in_flight, flush=True)
except FileNotFoundError:
    a = Archive.create(run, "kill")
    a.add_node(parent_id=None, status="admitted", operator="seed", files={"a.py": "0"}, message="seed", score=0.0)
    print("added 0", flush=True)
    print("updated 0", flush=True)
while True:
    i = a.store.next_id()
    n = a.add_node(parent_id=(i - 1) // 2, status="proposed", operator="diff", files={"a.py": str(i)}, message=f"n{i}")
    print("added", n.id, flush=True)
    a.update_node(n.id, status="admitted", score=float(n.id))
    print("updated", n.id, flush=True)
"""


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_reader_process_while_writer_inserts(tmp_path):
    a = Archive.create(tmp_path / "run", "live")
    a.add_node(parent_id=None, status="admitted", operator="seed", files={"n.txt": "0"}, message="seed")
    reader = _python(READER, str(tmp_path / "run"), "51")
    try:
        assert reader.stdout.readline().strip() == "ready", reader.stderr.read()
        for i in range(1, 51):
            n = a.add_node(parent_id=i - 1, status="proposed", operator="diff", files={"n.txt": str(i)}, message="m")
            a.update_node(n.id, status="admitted", score=float(i))
            time.sleep(0.002)
        out, err = reader.communicate(timeout=30)
    finally:
        reader.kill()
    assert reader.returncode == 0, err
    result = json.loads(out)
    assert result["errors"] == []
    assert result["counts"][0] == 1 and result["counts"][-1] == 51
    assert a.count(status="admitted") == 51 and a.check() == []
    a.close()


def test_kill_9_writer_then_recover(tmp_path):
    run = tmp_path / "run"
    rng = random.Random(7)
    added: set[int] = set()
    updated: set[int] = set()
    for _ in range(3):  # crash, reopen, continue, crash again ...
        w = _python(WRITER, str(run))
        lines: list[str] = []
        deadline = time.time() + 30
        while sum(l.startswith("added") for l in lines) < 15 and time.time() < deadline:
            lines.append(w.stdout.readline())
            assert lines[-1], w.stderr.read()
        time.sleep(rng.uniform(0, 0.01))
        os.kill(w.pid, signal.SIGKILL)
        out, _ = w.communicate(timeout=10)
        assert w.returncode == -signal.SIGKILL
        # only whole lines count: the kill can cut the last one ("updated" with no id, or
        # "added 1" of "added 12"), and a cut line reports nothing the writer finished
        whole = [l for l in "".join(lines + [out]).splitlines(keepends=True) if l.endswith("\n") and l.strip()]
        for kind, *rest in (l.split() for l in whole):
            if kind == "added":
                added.add(int(rest[0]))
            elif kind == "updated":
                updated.add(int(rest[0]))
    assert len(added) >= 45
    with Archive.open(run) as a:
        report = a.recover()
        assert a.check() == []
        nodes = {n.id: n for n in a.nodes()}
        assert added <= set(nodes), "a committed row was lost"
        assert sorted(nodes) == list(range(len(nodes)))
        for i in updated:
            assert nodes[i].status is NodeStatus.ADMITTED and nodes[i].score == float(i)
        assert set(report.in_flight) == {i for i, n in nodes.items() if n.status is NodeStatus.PROPOSED}
        assert set(report.in_flight) <= set(nodes) - updated
        for i, n in nodes.items():
            assert a.read_files(i) == {"a.py": str(i).encode()}
            if i:
                assert a.repo.parents(n.commit) == [nodes[(i - 1) // 2].commit]
        nxt = a.add_node(parent_id=0, status="proposed", operator="diff", files={"a.py": "x"}, message="after")
        assert nxt.id == len(nodes) and a.check() == []
