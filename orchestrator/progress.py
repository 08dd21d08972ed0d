"""Live progress for ``dgm run``: a rich panel on a terminal, plain event lines elsewhere (CI, pipes)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from orchestrator.campaign import Stats


def _fmt_score(score: float | None) -> str:
    return "-" if score is None else f"{score:.4f}"


def render(stats: Stats) -> Table:
    c = stats.counts
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", justify="right")
    table.add_column()
    table.add_row("iteration", f"{stats.started}/{stats.target}   in flight: {stats.proposing} proposing, {stats.evaluating} evaluating")
    table.add_row(
        "nodes",
        f"[green]{c.get('admitted', 0)} admitted[/]  {c.get('rejected', 0)} rejected  "
        f"[yellow]{c.get('invalid', 0)} invalid[/]  [red]{c.get('failed', 0)} failed[/]",
    )
    table.add_row("best", f"{_fmt_score(stats.best_score)} (node {stats.best_node})   seed {_fmt_score(stats.seed_score)}")
    table.add_row("FM", f"{stats.fm_calls} calls, {stats.tokens:,} tokens, ${stats.cost_usd:.4f}")
    table.add_row("elapsed", time.strftime("%H:%M:%S", time.gmtime(stats.elapsed_s)))
    if stats.last_event:
        table.add_row("last", stats.last_event)
    return table


class Progress:
    """Use as a context manager; pass ``update`` to the campaign as ``on_update``."""

    def __init__(self, console: Console | None = None, live: bool | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live_enabled = self.console.is_terminal if live is None else live
        self._live: Live | None = None
        self._last_event = ""

    def __enter__(self) -> "Progress":
        if self.live_enabled:
            self._live = Live(console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def update(self, stats: Stats) -> None:
        if self._live is not None:
            self._live.update(render(stats))
        elif stats.last_event and stats.last_event != self._last_event:
            best = _fmt_score(stats.best_score)
            self.console.print(f"[{stats.started}/{stats.target}] {stats.last_event}  (best {best})", highlight=False)
        self._last_event = stats.last_event
