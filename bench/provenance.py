"""What every bench result records about where it came from: the commit and the time.

One place for it, so that every results file says the same thing the same way: the short commit
of HEAD, with "+uncommitted" when tracked files differ from it (the code that ran is then not
exactly that commit), and the time in UTC.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    """``git ARGS`` in the repository root, its stdout stripped ("" when git fails)."""
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()


def commit() -> str:
    """The short commit of HEAD, plus "+uncommitted" when a tracked file has changed since."""
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + ("+uncommitted" if dirty else "")


def utc_now() -> str:
    """The current time, ISO 8601 in UTC (as every results file writes it)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
