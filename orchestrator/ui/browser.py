"""The system Chromium, driven by Playwright, for the UI's browser tests and benchmark.

Playwright's own browser download is not used: ``make system-deps`` installs Debian's ``chromium``
and we launch its binary (``executable_path``). ``DGM_CHROMIUM`` overrides the path.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "chromium-headless-shell", "google-chrome")


def find_chromium() -> str | None:
    """The Chromium binary to drive, or None. Debian's /usr/bin/chromium is a shell wrapper; the
    binary behind it is launched directly."""
    if os.environ.get("DGM_CHROMIUM"):
        return os.environ["DGM_CHROMIUM"]
    for name in CANDIDATES:
        path = name if Path(name).is_absolute() and os.access(name, os.X_OK) else shutil.which(name)
        if path:
            return path
    return None


def launch(playwright, **kw):
    """A headless Chromium (root needs --no-sandbox: Chromium's own sandbox refuses uid 0)."""
    path = find_chromium()
    if path is None:
        raise RuntimeError("no Chromium found: run `make system-deps` as root (apt-get install chromium) or set DGM_CHROMIUM")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return playwright.chromium.launch(executable_path=path, headless=True, args=args, **kw)
