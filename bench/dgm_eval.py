"""`dgm eval AGENT --json` as the bench scripts call it: one sandboxed evaluation, as a campaign
runs it, in a subprocess (so a candidate that crashes or hangs cannot take the script with it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dgm_eval(agent: Path, evaluator: str, *, stages: list[str] | tuple[str, ...] = (), options: dict | None = None,
             seed: int | None = None, timeout_s: float = 3600) -> dict:
    """The JSON `dgm eval` prints; ``{"evaluator_error": tail}`` when it printed none."""
    cmd = [str(ROOT / ".venv" / "bin" / "dgm"), "eval", str(agent), "--evaluator", evaluator, "--json"]
    cmd += [a for s in stages for a in ("--stage", s)]
    cmd += [a for k, v in (options or {}).items() for a in ("--option", f"{k}={json.dumps(v)}")]
    cmd += ["--seed", str(seed)] if seed is not None else []
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    try:
        return json.loads(r.stdout)
    except ValueError:
        return {"evaluator_error": (r.stdout + r.stderr)[-600:]}
