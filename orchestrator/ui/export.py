"""``dgm archive export RUN --format html``: the UI as one self-contained file.

The same page as ``dgm ui`` (tree, node pages, progress charts), with its stylesheet, scripts and
the run's data inlined, so it opens offline from a file. Every node's details are included (code,
diff, prompt, answer, metrics), so the file grows with the run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .data import RunView
from .server import STATIC_DIR

_SCRIPT = re.compile(r'<script src="static/([\w.\-]+)"></script>')
#: scripts the served page loads on first use (charts); the export inlines them up front
LAZY_SCRIPTS = ("chart.umd.min.js", "charts.js")
_STYLE = re.compile(r'<link rel="stylesheet" href="static/([\w.\-]+)">')


def _inline_json(obj: object) -> str:
    """JSON safe inside <script>: no '<' (so no '</script>' or '<!--'), no line separators."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _inline_script(js: str) -> str:
    if "</script" in js.lower():
        raise ValueError("a vendored script contains '</script'; it cannot be inlined as is")
    return js


def run_data(view: RunView) -> dict:
    """Everything the page asks the server for, for one run."""
    nodes = view.changes(0)
    return {
        "index": view.index,
        "name": view.name,
        "run_dir": str(view.run_dir),
        "campaign": view.campaign,
        "nodes": nodes,
        "series": view.series(),
        "details": {str(i): view.detail(i) for i in sorted(view.nodes)},
    }


def export_html(run_dirs: list[str | Path]) -> str:
    views = [RunView(d, i) for i, d in enumerate(run_dirs)]
    try:
        data = {"static": True, "runs": [run_data(v) for v in views]}
    finally:
        for v in views:
            v.close()
    page = (STATIC_DIR / "index.html").read_text()
    page = _STYLE.sub(lambda m: "<style>\n" + (STATIC_DIR / m[1]).read_text() + "\n</style>", page)
    page = _SCRIPT.sub(
        lambda m: "<script>\n" + _inline_script((STATIC_DIR / m[1]).read_text()) + "\n</script>", page
    )
    marker = "<!--DGM_DATA-->"
    if marker not in page:
        raise RuntimeError(f"{STATIC_DIR / 'index.html'} lacks the {marker} marker")
    lazy = "".join("<script>\n" + _inline_script((STATIC_DIR / name).read_text()) + "\n</script>\n" for name in LAZY_SCRIPTS)
    return page.replace(marker, "<script>window.DGM_DATA=" + _inline_json(data) + ";</script>\n" + lazy, 1)
