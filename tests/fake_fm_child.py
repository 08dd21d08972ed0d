"""Stand-in for ``orchestrator.fm.embedded_server`` in EmbeddedServer tests: no model, instant.

Run as ``python -m tests.fake_fm_child`` with the repository root on PYTHONPATH.

Same command line; FAKE_FM_MODE picks the behaviour: ok (serve a ScriptedFMServer that answers
"pid <pid>"), crash (print an error and exit 3), hang (never become healthy).
"""

import argparse
import os
import sys
import threading
import time

from tests.fm_server import Reply, ScriptedFMServer
from orchestrator.fm.embedded_server import _exit_when_orphaned

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--parent-pid", type=int)
args, _ = ap.parse_known_args()
if args.parent_pid:
    _exit_when_orphaned(args.parent_pid, interval_s=0.1)
mode = os.environ.get("FAKE_FM_MODE", "ok")
if mode == "crash":
    print("fatal: cannot load model (fake)", file=sys.stderr, flush=True)
    sys.exit(3)
if mode == "hang":
    time.sleep(3600)
ScriptedFMServer(responder=lambda req: Reply(f"pid {os.getpid()}", 1, 1), port=args.port).start()
threading.Event().wait()
