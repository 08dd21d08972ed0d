"""Child process that serves a GGUF model over the OpenAI protocol with xllamacpp.

    python -m orchestrator.fm.embedded_server --model PATH --port P --ctx N --parallel 2 --threads T

``--ctx`` is the context of one slot (one request); llama.cpp is given ``ctx * parallel`` and
splits it among the slots. The process exits on SIGTERM/SIGINT and when its parent dies
(``--parent-pid``, checked twice a second). Started and owned by ``EmbeddedServer``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time


def _exit_when_orphaned(parent_pid: int, interval_s: float = 0.5) -> None:
    """Exit as soon as ``parent_pid`` is no longer our parent (it died; we were re-parented).

    A polling thread rather than PR_SET_PDEATHSIG: that signal fires when the *thread* that
    spawned us exits, which would kill the server when a worker thread started it.
    """
    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(0)
            time.sleep(interval_s)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m orchestrator.fm.embedded_server")
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--ctx", type=int, default=8192, help="context of one slot, in tokens")
    ap.add_argument("--parallel", type=int, default=2, help="slots (requests decoded together)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: all available cores)")
    ap.add_argument("--alias", default=None, help="model name the server reports")
    ap.add_argument("--parent-pid", type=int, default=None, help="exit when this process dies")
    args = ap.parse_args(argv)

    if args.parent_pid is not None:
        _exit_when_orphaned(args.parent_pid)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: os._exit(0))

    import xllamacpp  # after the watchdog: loading the model takes seconds

    threads = args.threads or len(os.sched_getaffinity(0))
    p = xllamacpp.CommonParams()
    p.model.path = args.model
    p.n_ctx = args.ctx * args.parallel
    p.n_parallel = args.parallel
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.port = args.port
    p.hostnames = [args.host]
    if args.alias:
        p.model_alias = {args.alias}
    server = xllamacpp.Server(p)  # returns once the model is loaded and the port is served
    print(f"embedded FM server ready on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    try:
        threading.Event().wait()
    finally:
        del server


if __name__ == "__main__":
    main()
