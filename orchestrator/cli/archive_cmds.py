"""``dgm status`` and ``dgm archive …``: read-only views of a run (safe while a campaign writes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from archive import Archive, Node, NodeStatus
from orchestrator.ledger import Ledger
from orchestrator.report import yield_lines

LIST_OMITS = {"prompt", "response"}  # large; `archive show` has them
STATUS_STYLE = {"admitted": "green", "rejected": "white", "invalid": "yellow", "failed": "red", "evaluating": "cyan", "proposed": "cyan"}

run_dir_arg = click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
json_opt = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _open(run_dir: Path) -> Archive:
    return Archive.open(run_dir, readonly=True)


def _node(archive: Archive, ref: str) -> Node:
    """A node by id, or ``best`` (the highest-scoring admitted node)."""
    if ref == "best":  # by the run's lower confidence bound, as the campaign ranks
        top = _ledger(archive).best
        if top is None:
            raise click.ClickException(f"{archive.run_dir}: no admitted node yet")
        return top
    try:
        return archive.get(int(ref))
    except (KeyError, ValueError):
        raise click.ClickException(f"{archive.run_dir}: no node {ref!r} (ids 0..{archive.count() - 1}, or 'best')") from None


def _dump(obj) -> None:
    click.echo(json.dumps(obj, indent=2, allow_nan=False, default=str))


def _score(node: Node) -> str:
    return "-" if node.score is None else f"{node.score:.4f}"


def _ledger(archive: Archive) -> Ledger:
    """The same ledger the campaign loop keeps, ranking by the run's own confidence bound."""
    try:
        confidence = float(json.loads(archive.get_meta("config") or "{}").get("admission", {}).get("confidence", 0.0))
    except (ValueError, AttributeError):
        confidence = 0.0
    return Ledger(archive.nodes(), confidence=confidence, clades=False)


def _summary(archive: Archive) -> dict:
    """The run's totals, from the same ledger the campaign loop keeps."""
    ledger = _ledger(archive)
    try:
        budget = {k: v for k, v in json.loads(archive.get_meta("config") or "{}").get("budget", {}).items() if v is not None}
    except (ValueError, AttributeError):
        budget = {}
    return {"run_dir": str(archive.run_dir), "campaign": archive.campaign, **ledger.summary(),
            "score_spread": ledger.spread, "wall_s": float(archive.get_meta("wall_s") or 0.0), "budget": budget}


@click.command()
@run_dir_arg
@json_opt
def status(run_dir: Path, as_json: bool) -> None:
    """Summary of a run: counts by status, best node, usage."""
    with _open(run_dir) as archive:
        s = _summary(archive)
    if as_json:
        return _dump(s)
    c = s["counts"]
    click.echo(f"campaign {s['campaign']!r} in {s['run_dir']}: {s['iterations']} iterations, {s['nodes']} nodes")
    click.echo("  " + ", ".join(f"{k} {v}" for k, v in c.items() if v))
    if s["best"]:
        click.echo(f"  best: node {s['best']['id']} score {s['best']['score']:.4f} {s['best']['public_metrics']}")
    click.echo(f"  seed score: {s['seed_score']}" + (f" (score spread between evaluations: {s['score_spread']:.4f})" if s["score_spread"] else ""))
    click.echo(f"  FM: {s['fm_calls']} calls, {s['tokens']:,} tokens, ${s['cost_usd']:.4f}")
    click.echo(f"  spent: {s['wall_s']:.0f} s of wall-clock, {s['gpu_s']:.1f} GPU-seconds")
    if s["budget"]:
        click.echo("  budget: " + ", ".join(f"{k} = {v}" for k, v in sorted(s["budget"].items())))
    for line in yield_lines(s["operators"], s["ideas"]):
        click.echo(line)


@click.group()
def archive() -> None:
    """Inspect a run's archive tree."""


@archive.command("list")
@run_dir_arg
@json_opt
@click.option("--status", "status_filter", type=click.Choice([s.value for s in NodeStatus]), multiple=True)
def list_cmd(run_dir: Path, as_json: bool, status_filter: tuple[str, ...]) -> None:
    """Every node (prompt and response are in `archive show`)."""
    with _open(run_dir) as arc:
        nodes = arc.nodes(status=[NodeStatus(s) for s in status_filter] or None)
    if as_json:
        return _dump([n.model_dump(mode="json", exclude=LIST_OMITS) for n in nodes])
    table = Table("id", "parent", "status", "op", "score", "tokens", "error / feedback", box=None)
    for n in nodes:
        note = (n.error_line or n.final_feedback)[:70]
        style = STATUS_STYLE.get(n.status.value, "")
        table.add_row(str(n.id), str(n.parent_id if n.parent_id is not None else "-"), f"[{style}]{n.status.value}[/]",
                      n.operator, _score(n), str(n.prompt_tokens + n.completion_tokens), note)
    Console().print(table)


@archive.command()
@run_dir_arg
@click.argument("node_ref", metavar="NODE")
@json_opt
def show(run_dir: Path, node_ref: str, as_json: bool) -> None:
    """One node (an id or 'best') with every field, prompt and response included."""
    with _open(run_dir) as arc:
        node = _node(arc, node_ref)
        if as_json:
            return _dump(node.model_dump(mode="json"))
        _show(arc, node)


def _show(arc: Archive, node: Node) -> None:
    # a self-improvement step keeps its improver's model calls in `prompt` and its output in `response`
    labels = {"prompt": "improver transcript (model calls)", "response": "improver output"} if node.operator == "self" else {}
    for key, value in node.model_dump(mode="json").items():
        if key in ("prompt", "response", "feedback", "error") and value:
            click.echo(f"--- {labels.get(key, key)} ---\n{value}")
        elif key == "draws" and len(value) > 1:
            ledger = _ledger(arc)
            seeds = ", ".join(f"+{k}" for k in node.seed_offsets)
            click.echo(f"draws: {value} on evaluation seeds {seeds} (mean {node.score:.4f}, spread {ledger.spread:.4f} "
                       f"pooled over the run, lower bound {ledger.lcb(node):.4f})")
        elif key == "draw_seeds":
            continue  # given with the draws
        elif key == "stages":
            for st in value:
                click.echo(f"stage {st['stage']}: valid={st['valid']} gate={st['passed_gate']} score={st['score']} {st['public']}")
        else:
            click.echo(f"{key}: {value}")


@archive.command()
@run_dir_arg
@click.argument("node_ref", metavar="NODE")
@json_opt
def lineage(run_dir: Path, node_ref: str, as_json: bool) -> None:
    """The path root → NODE (an id or 'best'), with scores."""
    with _open(run_dir) as arc:
        chain = arc.lineage(_node(arc, node_ref).id)
    if as_json:
        return _dump([{"id": n.id, "status": n.status.value, "score": n.score, "operator": n.operator} for n in chain])
    for depth, n in enumerate(chain):
        summary = n.response and n.response.strip().split("\n")[0][:60]
        click.echo(f"{'  ' * depth}└─ node {n.id} [{n.status.value}] score {_score(n)} {n.operator} {summary or ''}".rstrip())


@archive.command()
@run_dir_arg
@click.argument("node_ref", metavar="NODE")
def diff(run_dir: Path, node_ref: str) -> None:
    """NODE's code (an id or 'best') against its parent's, as a unified diff."""
    with _open(run_dir) as arc:
        click.echo(arc.diff(_node(arc, node_ref).id), nl=False)


@archive.command()
@run_dir_arg
@click.argument("node_ref", metavar="NODE")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
def checkout(run_dir: Path, node_ref: str, dest: Path) -> None:
    """Write NODE's files (an id or 'best') into DEST, a new or empty directory: an agent that
    `dgm eval` or a benchmark can run (e.g. the best agent on a held-out split)."""
    with _open(run_dir) as arc:
        node = _node(arc, node_ref)
        try:
            arc.materialize(node.id, dest)
        except FileExistsError:
            raise click.ClickException(f"{dest}: not empty; checkout writes into a new or empty directory") from None
    click.echo(f"node {node.id} (score {_score(node)}) written to {dest}")


@archive.command()
@run_dir_arg
@click.option("--format", "fmt", type=click.Choice(["json", "dot", "html"]), default="json", show_default=True)
def export(run_dir: Path, fmt: str) -> None:
    """The whole tree as JSON, Graphviz dot, or one self-contained HTML page (the UI, offline)."""
    if fmt == "html":
        from orchestrator.ui.export import export_html

        return click.echo(export_html([run_dir]))
    with _open(run_dir) as arc:
        click.echo(arc.export(fmt))


@archive.command()
@run_dir_arg
def check(run_dir: Path) -> None:
    """Verify that the database and the git repository agree; exit 1 if not."""
    with _open(run_dir) as arc:
        problems = arc.check()
        n = arc.count()
    if problems:
        for p in problems:
            click.echo(f"problem: {p}", err=True)
        sys.exit(1)
    click.echo(f"ok: {n} nodes, database and git agree")
