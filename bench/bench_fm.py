"""Embedded model speed: start-up, one request, two requests in flight.

    .venv/bin/python bench/bench_fm.py [--tokens 128] [--threads N]

Writes bench/results/fm.json. Decoding is forced to the full token count (ignore_eos) so runs compare.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.fm.config import FMConfig  # noqa: E402
from orchestrator.fm.providers import open_fm  # noqa: E402


def messages(i: int) -> list[dict]:
    return [{"role": "system", "content": "You are a careful Python programmer."},
            {"role": "user", "content": f"Write a Python function that returns the {i}-th prime number, with a docstring."}]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    args = ap.parse_args()
    cfg = FMConfig(provider="embedded", n_threads=args.threads)
    out: dict = {"tokens": args.tokens, "threads": args.threads or os.cpu_count(), "load_avg_1m_before": os.getloadavg()[0]}
    t0 = time.monotonic()
    with open_fm(cfg, log=lambda m: None) as fm:
        out["startup_s"] = round(time.monotonic() - t0, 2)
        singles = []
        for i in (1, 2):
            c = fm.complete(messages(10 + i), temperature=0.7, seed=i, max_tokens=args.tokens, extra_body={"ignore_eos": True})
            singles.append(c.completion_tokens / c.latency_s)
        out["single_tokens_per_s"] = round(max(singles), 2)
        results = []

        def worker(i: int) -> None:
            results.append(fm.complete(messages(20 + i), temperature=0.7, seed=100 + i, max_tokens=args.tokens,
                                       extra_body={"ignore_eos": True}))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        t1 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out["two_in_flight_total_tokens_per_s"] = round(sum(c.completion_tokens for c in results) / (time.monotonic() - t1), 2)
    out["load_avg_1m_after"] = os.getloadavg()[0]
    path = ROOT / "bench" / "results" / "fm.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
