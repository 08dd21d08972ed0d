"""``dgm plot``: PNG charts of a run (progress, operator and idea yield, FM usage, time per node), drawn with
matplotlib's Agg backend (no display needed) from the same series as the web UI."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from archive import Archive  # noqa: E402
from orchestrator.ledger import Ledger  # noqa: E402

from . import series  # noqa: E402

DPI = 110


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_progress(s: dict[str, Any], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    pts = s["scores"]
    for status, colour in (("admitted", "#1a9850"), ("rejected", "#999999")):
        xs = [p[0] for p in pts if p[2] == status]
        ys = [p[1] for p in pts if p[2] == status]
        if xs:
            ax.scatter(xs, ys, s=10, c=colour, alpha=0.5, label=f"{status} node")
    ax.step(s["iteration"], s["best"], where="post", color="#d95f02", lw=2, label="best admitted")
    ax.plot(s["iteration"], s["mean"], color="#7570b3", lw=1.5, label="mean admitted")
    ax.set(xlabel="iteration (node id)", ylabel="score", title=f"{title}: score")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_yield(y: dict[str, Any], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = y["operator"]
    width = 0.8 / len(series.YIELD_KEYS)
    for k, key in enumerate(series.YIELD_KEYS):
        ax.bar([i + (k - 1.5) * width for i in range(len(names))], y[key], width, label=key.replace("_", " "))
    ax.set_xticks(range(len(names)), names)
    ax.set(ylabel="nodes", title=f"{title}: yield per operator")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of nodes
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    if not names:
        ax.text(0.5, 0.5, "no child attempts yet", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def plot_idea_yield(y: dict[str, Any], title: str, path: Path) -> Path:
    """Horizontal bars per idea (ideas are sentences: each cut to 60 characters), the most tried on top."""
    names = [textwrap.shorten(i, 60, placeholder=" …") for i in y["idea"]]
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.55 * max(1, len(names))))
    height = 0.8 / len(series.YIELD_KEYS)
    for k, key in enumerate(series.YIELD_KEYS):
        ax.barh([i + (k - 1.5) * height for i in range(len(names))], y[key], height, label=key.replace("_", " "))
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="nodes", title=f"{title}: yield per idea")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_cost(u: dict[str, Any], t: dict[str, Any], title: str, path: Path) -> Path:
    fig, (ax1, ax3) = plt.subplots(2, 1, figsize=(8, 7))
    span = u["elapsed_s"][-1] if u["elapsed_s"] else 0.0
    unit, div = ("hours", 3600) if span > 7200 else ("minutes", 60) if span > 600 else ("seconds", 1)
    when = [t / div for t in u["elapsed_s"]]
    ax1.plot(when, u["tokens"], color="#1b9e77", label="FM tokens (cumulative)")
    ax1.set(xlabel=f"{unit} since the seed", ylabel="tokens", title=f"{title}: FM usage over time")
    ax2 = ax1.twinx()
    ax2.plot(when, u["cost_usd"], color="#d95f02", ls="--", label="cost USD (cumulative)")
    ax2.set_ylabel("USD")
    lines = ax1.get_lines() + ax2.get_lines()
    ax1.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="upper left")
    ax1.grid(alpha=0.3)
    xs = t["first_id"]
    ax3.bar(xs, t["fm_s"], width=t["size"] * 0.9, align="edge", color="#7570b3", label="FM s")
    ax3.bar(xs, t["eval_s"], width=t["size"] * 0.9, align="edge", bottom=t["fm_s"], color="#e7298a", label="evaluation s")
    per = "per node" if t["size"] == 1 else f"mean per node, buckets of {t['size']} nodes"
    ax3.set(xlabel="node id", ylabel="seconds", title=f"where the time goes ({per})")
    ax3.grid(axis="y", alpha=0.3)
    ax3.legend(fontsize=8)
    return _save(fig, path)


def write_plots(run_dir: str | Path, out_dir: str | Path = ".") -> list[Path]:
    """progress.png, yield.png and cost.png of one run, and ideas.png when its prompts carried ideas, in
    out_dir (created if needed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with Archive.open(run_dir, readonly=True) as arc:
        nodes = arc.nodes()
        title = arc.campaign or Path(run_dir).name
    data = series.all_series(nodes, Ledger(nodes).summary())
    paths = [
        plot_progress(data["progress"], title, out / "progress.png"),
        plot_yield(data["yield"], title, out / "yield.png"),
        plot_cost(data["usage"], data["time"], title, out / "cost.png"),
    ]
    if data["ideas"]["idea"]:  # a campaign without ideas gets no empty chart
        paths.append(plot_idea_yield(data["ideas"], title, out / "ideas.png"))
    else:  # nor an earlier run's chart left beside its own, as if it were this run's
        (out / "ideas.png").unlink(missing_ok=True)
    return paths
