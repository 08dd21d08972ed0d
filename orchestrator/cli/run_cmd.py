"""``dgm run``: run or resume a campaign with a live progress display."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.campaign import Campaign, CampaignError
from orchestrator.config import load_config
from orchestrator.plan import CampaignPlan
from orchestrator.progress import Progress, _fmt_score


def default_run_dir(config_path: Path) -> Path:
    return Path(config_path).resolve().parent / "run"


@click.command()
@click.argument("campaign_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--iterations", "-n", type=click.IntRange(min=0), help="Total child attempts (overrides [campaign].iterations).")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), help="Run directory (default: run/ beside the campaign file).")
@click.option("--live/--no-live", default=None, help="Live panel (default: when stderr is a terminal).")
def run(campaign_file: Path, iterations: int | None, run_dir: Path | None, live: bool | None) -> None:
    """Run CAMPAIGN_FILE, or resume it where it stopped."""
    from orchestrator.fm.providers import open_fm

    cfg = load_config(campaign_file)
    run_dir = (run_dir or default_run_dir(campaign_file)).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    with Progress(live=live) as progress:
        progress.console.print(f"dgm: campaign {cfg.campaign.name!r} → {run_dir} (FM: {cfg.fm.provider} {cfg.fm.model})")
        # built before the model starts, so a bad policy or operator name fails at once
        try:
            plan = CampaignPlan.from_config(cfg)
        except CampaignError as e:
            raise CampaignError(f"{campaign_file}: {e}") from None
        with open_fm(cfg.fm, log=lambda msg: progress.console.print(f"dgm: {msg}", highlight=False),
                     server_log_path=run_dir / "fm-server.log") as fm:
            stats = Campaign(cfg, run_dir, fm, plan=plan, on_update=progress.update).run(iterations)
    click.echo(f"stopped: {stats.stop_reason}")
    c = stats.counts
    click.echo(
        f"nodes: {c.get('admitted', 0)} admitted, {c.get('rejected', 0)} rejected, {c.get('invalid', 0)} invalid, "
        f"{c.get('failed', 0)} failed; best {_fmt_score(stats.best_score)} (node {stats.best_node}), "
        f"seed {_fmt_score(stats.seed_score)}; {stats.elapsed_s:.0f} s"
    )
    click.echo(f"inspect: dgm status {run_dir}   dgm archive lineage {run_dir} {stats.best_node}")
