"""``dgm ui`` (a live, read-only web view of runs) and ``dgm plot`` (PNG charts of a run)."""

from __future__ import annotations

import os
from pathlib import Path

import click

run_dirs_arg = click.argument(
    "run_dirs", metavar="RUN [RUN ...]", nargs=-1, required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)


@click.command()
@run_dirs_arg
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback unless a token is given).")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.option("--token", default=None, help="Secret every request must carry; required for a non-loopback --host. "
              "Default: $DGM_UI_TOKEN.")
def ui(run_dirs: tuple[Path, ...], host: str, port: int, token: str | None) -> None:
    """Browse runs in a web browser: the tree, node pages, progress, compare. Read-only and live."""
    from orchestrator.ui.server import TOKEN_ENV, BindError, UIServer

    token = token or os.environ.get(TOKEN_ENV) or None
    try:
        server = UIServer(run_dirs, host=host, port=port, token=token)
    except BindError as e:
        raise click.UsageError(str(e)) from None
    url = server.url + (f"?token={token}" if token else "")
    total = sum(r.rows_at_open for r in server.runs)
    click.echo(f"dgm ui: {len(server.runs)} run(s), {total:,} nodes, at {url}  (Ctrl-C to stop)")
    server.serve_forever()


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", default=".", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the PNG files (created if needed).")
def plot(run_dir: Path, out_dir: Path) -> None:
    """PNG charts of a run: progress.png (score), yield.png (per operator), cost.png (FM usage, time),
    ideas.png (per idea, when the prompts carried ideas; an ideas.png already in the directory is
    removed otherwise, so that it is not read as this run's)."""
    from orchestrator.ui.plots import write_plots

    for path in write_plots(run_dir, out_dir):
        click.echo(str(path))
