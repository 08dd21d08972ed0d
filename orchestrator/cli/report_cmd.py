"""``dgm report RUN``: seed and best with spreads and held-out metrics, yield per operator, FM
calls to the first improvement, and a PNG of the best score over iterations."""

from __future__ import annotations

import json
from pathlib import Path

import click

from orchestrator.cli.archive_cmds import _ledger, _open, json_opt, run_dir_arg
from orchestrator.report import build_report, render


@click.command()
@run_dir_arg
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write best.png into this folder (default: CAMPAIGN-best.png in the current folder, so "
                   "reports of two campaigns do not overwrite each other).")
@json_opt
def report(run_dir: Path, out_dir: Path | None, as_json: bool) -> None:
    """What the campaign in RUN_DIR found (see also `dgm plot` and `dgm ui`)."""
    from orchestrator.ui import plots, series

    with _open(run_dir) as arc:
        nodes, confidence, name = arc.nodes(), _ledger(arc).confidence, arc.campaign
    data = build_report(nodes, confidence=confidence, campaign=name)
    if out_dir is None:
        png = Path(f"{name or run_dir.resolve().parent.name}-best.png")
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        png = out_dir / "best.png"
    data["png"] = str(plots.plot_progress(series.progress(nodes), name or run_dir.name, png))
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(render(data))
        click.echo(f"best score over iterations: {data['png']}")
