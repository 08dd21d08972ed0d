"""``dgm remeasure``: evaluate a known program again on new evaluation seeds."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import click

from archive import Node
from archive.lock import WriterLock
from orchestrator.campaign import Campaign, CampaignError
from orchestrator.cli.run_cmd import default_run_dir
from orchestrator.config import CampaignConfig, load_config
from orchestrator.plan import CampaignPlan


@click.command()
@click.argument("campaign_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("node_ref", metavar="NODE")
@click.option("--draws", "-n", type=click.IntRange(1, 50), default=2, show_default=True,
              help="Evaluations to add, each on an evaluation seed the node has not had.")
@click.option("--run-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Run directory (default: run/ beside the campaign file).")
def remeasure(campaign_file: Path, node_ref: str, draws: int, run_dir: Path | None) -> None:
    """Measure NODE (an id or 'best') of CAMPAIGN_FILE's run again, DRAWS more times.

    The node keeps its verdict; its draws, mean score and spread grow, and with them its lower
    bound, so best and selection see the new measurement. Not while a campaign runs the same run.
    """
    cfg = load_config(campaign_file)
    run_dir = (run_dir or default_run_dir(campaign_file)).resolve()
    if not (run_dir / "archive.db").exists():
        raise click.ClickException(f"{run_dir} is not a dgm run directory (no archive.db); run the campaign first")
    try:
        node, failed = remeasure_in_run(cfg, run_dir, node_ref, draws, log=click.echo)
    except CampaignError as e:
        raise CampaignError(f"{campaign_file}: {e}") from None
    for reason in failed:
        click.echo(f"not complete: {reason}", err=True)
    click.echo(f"node {node.id}: draws {[round(d, 6) for d in node.draws]}, mean {node.score:.6f}")
    if node.private_draws:
        click.echo("held-out draws: " + ", ".join(f"{k} {[round(v, 6) for v in vs]}" for k, vs in sorted(node.private_draws.items())))


def remeasure_in_run(cfg: CampaignConfig, run_dir: Path, node_ref: int | str, draws: int,
                     log: Callable[[str], None] = print) -> tuple[Node, list[str]]:
    """``Campaign.remeasure`` under the run's writer lock, with the embedded or remote model
    served only for evaluators whose candidates call one (coding). Raises ``CampaignError``
    (a config the plan refuses, a node that cannot be measured, a campaign running this run)."""
    from orchestrator.fm.providers import open_fm

    plan = CampaignPlan.from_config(cfg)
    lock = WriterLock(run_dir)  # before any model starts: a campaign running this run refuses at once
    try:
        serve = open_fm(cfg.fm, log=lambda msg: log(f"dgm: {msg}")) if plan.evaluator.fm_access else nullcontext()
        with serve as fm:
            return Campaign(cfg, run_dir, fm, plan=plan).remeasure(node_ref, draws)
    finally:
        lock.release()
