"""Time the archive's hot paths (per call, in ms) on a throwaway run directory.

Usage: python bench/bench_archive.py [N]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from archive import Archive

AGENT = {
    "main.py": "import numpy as np\n\n" + "def step(x):\n    return x * 2\n" * 40,
    "lib/geometry.py": "def area(r):\n    return 3.14159 * r * r\n" * 60,
    "README.md": "# agent\n" + "notes\n" * 30,
}


def timed(fn, n: int, setup=None) -> tuple[float, float]:
    samples = []
    for i in range(n):
        if setup is not None:
            setup(i)  # not timed
        t = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples), max(samples)


def main(n: int = 200) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "agent"
        for rel, text in AGENT.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_text(text)
        a = Archive.create(tmp / "run", "bench")
        a.add_node(parent_id=None, status="admitted", operator="seed", src_dir=src, message="seed")

        def edit_src(i):
            (src / "main.py").write_text(AGENT["main.py"] + f"# {i}\n")

        def add_dir(i):
            a.add_node(parent_id=0, status="proposed", operator="diff", src_dir=src, message=f"n{i}")

        def add_files(i):
            files = {**AGENT, "main.py": AGENT["main.py"] + f"# files {i}\n"}
            a.add_node(parent_id=0, status="proposed", operator="rewrite", files=files, message=f"f{i}")

        def add_empty(i):
            a.add_node(parent_id=0, status="failed", operator="diff", message="fm error", error="timeout")

        def update(i):
            a.update_node(i + 1, status="admitted", score=float(i), stages=[{"name": "eval", "ok": True}],
                          public_metrics={"score": float(i)}, timings={"eval_s": 1.0})

        rows = [
            ("add_node(src_dir=3 files)", timed(add_dir, n, edit_src)),
            ("add_node(files=3 files)", timed(add_files, n)),
            ("add_node(no code: empty child)", timed(add_empty, n)),
            ("update_node(status, score, stages, ...)", timed(update, n)),
            ("get(id)", timed(lambda i: a.get(i), n)),
            ("read_files(id)", timed(lambda i: a.read_files(i), n)),
            ("diff(id)", timed(lambda i: a.diff(i + 1), 20)),
        ]
        total = a.count()
        rows += [
            (f"nodes() with {total} nodes", timed(lambda i: a.nodes(), 5)),
            (f"check() with {total} nodes", timed(lambda i: a.check(), 3)),
        ]
        a.close()
    print(f"{'operation':45s} {'median ms':>10s} {'max ms':>10s}")
    for name, (med, mx) in rows:
        print(f"{name:45s} {med:10.2f} {mx:10.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
