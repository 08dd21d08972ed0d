"""``dgm evaluators list`` and ``dgm eval``: what is installed, and one evaluation of one agent."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from evaluators import registry
from evaluators.pipeline import evaluate


@click.group()
def evaluators() -> None:
    """Installed evaluators (entry-point group dgm.evaluators)."""


@evaluators.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(as_json: bool) -> None:
    """Every installed evaluator; a broken plugin is listed with its fault instead of stopping the
    list, and the exit status is then 1."""
    rows = []
    for name, ep in sorted(registry.entry_point_map().items()):
        try:
            cls = registry.load_class(name)
        except registry.EvaluatorLoadError as e:
            rows.append({"name": name, "entry_point": ep.value, "error": str(e)})
            continue
        rows.append({
            "name": name,
            "entry_point": ep.value,
            "stages": [{"name": s.name, "gate": dict(s.gate), "wall_s": s.limits.wall_s} for s in cls.stages],
            "metrics": [{"name": m.name, "public": m.public, "low": m.low, "high": m.high} for m in cls.metrics],
            "task": cls.task.strip().split("\n")[0],
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for r in rows:
        if "error" in r:
            click.echo(f"{r['name']:<16} BROKEN: {r['error']}")
        else:
            stages = " → ".join(s["name"] for s in r["stages"])
            click.echo(f"{r['name']:<16} stages {stages:<22} {r['task'][:70]}")
    broken = [r["name"] for r in rows if "error" in r]
    if broken:
        click.echo(f"{len(broken)} evaluator(s) broken: {', '.join(broken)}", err=True)
        sys.exit(1)


@click.command("eval")
@click.option("--evaluator", "name", required=True, help="Evaluator name (see `dgm evaluators list`).")
@click.argument("agent_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--stage", "stages", multiple=True, help="Run only this stage (repeatable).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="Evaluator option (JSON value or string).")
@click.option("--backend", default="auto", show_default=True, help="Sandbox backend.")
@click.option("--trusted", is_flag=True, help="Allow the unisolated 'process' backend.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A campaign.toml whose [fm] and [evaluation] fm_calls/fm_tokens serve an evaluator "
                   "whose candidates call the model (default: the embedded model, default budgets).")
@click.option("--no-fm", is_flag=True, help="Serve no model, even to an evaluator whose candidates call one.")
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(name, agent_dir, stages, options, backend, trusted, seed, config_path, no_fm, as_json) -> None:
    """Evaluate the agent in AGENT_DIR once and print its metrics.

    An evaluator whose candidates call the model while evaluated (``coding``) gets one through the
    FM proxy, as in a campaign. Exit 1 when any stage found the candidate invalid or the evaluator
    broke; a candidate stopped by a gate is valid (exit 0) but has no score (``complete: false``).
    """
    from evaluators.agent import AgentManifestError, load_manifest
    from sandboxes.factory import make_sandbox

    try:
        load_manifest(agent_dir)
        opts = dict(_option(o) for o in options)
        evaluator = registry.create(name, opts)
    except (AgentManifestError, registry.EvaluatorLoadError) as e:
        raise click.ClickException(str(e)) from None
    if evaluator.fm_access and not no_fm:
        result = _evaluate_with_fm(evaluator, name, opts, agent_dir, stages, backend, trusted, seed, config_path)
    else:
        result = evaluate(evaluator, agent_dir, make_sandbox(backend, trusted=trusted), seed=seed, stages=list(stages) or None)
    gated = result.gated
    if as_json:
        click.echo(json.dumps({
            "evaluator": name, "agent": str(agent_dir), "valid": result.valid, "complete": result.complete,
            "gated": gated.stage if gated else None, "score": result.score,
            "public_metrics": result.public_metrics, "private_metrics": result.private_metrics,
            "stages": [s.to_record() for s in result.stages], "error": result.error, "feedback": result.feedback,
            "fm_usage": result.fm_usage,
        }, indent=2))
    else:
        for s in result.stages:
            verdict = "ok" if s.valid and s.passed_gate else ("gate" if s.valid else "INVALID")
            score = "-" if s.score is None else f"{s.score:.4f}"
            click.echo(f"{s.stage:<8} {verdict:<8} score {score:<8} {s.wall_s:6.2f}s  {s.public} private={s.private}")
        click.echo(f"valid: {str(result.valid).lower()}  complete: {str(result.complete).lower()}  "
                   f"score: {'-' if result.score is None else f'{result.score:.6g}'}")
        if result.error:
            click.echo(f"error: {result.error}")
        if result.feedback:  # every stage's words, later stages included
            click.echo(result.feedback)
        if result.fm_usage:
            u = result.fm_usage
            click.echo(f"FM: {u['calls']} calls ({u['refused']} refused), "
                       f"{u['prompt_tokens'] + u['completion_tokens']:,} tokens")
    sys.exit(0 if result.valid else 1)


def _evaluate_with_fm(evaluator, name, opts, agent_dir: Path, stages, backend, trusted, seed, config_path):
    """One evaluation as a campaign runs it (the executor's job, with an FM proxy for the
    candidate), on the model that ``--config``'s [fm] names."""
    from orchestrator.config import CampaignConfig, ConfigError, load_config
    from orchestrator.executor import EvalJob, EvaluationEnvironment, SandboxSpec, run_job
    from orchestrator.fm.providers import open_fm

    try:
        cfg = load_config(config_path) if config_path else CampaignConfig.model_validate({"evaluator": {"name": name}})
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    from orchestrator.mutation.parsing import ProposalInvalid
    from orchestrator.mutation.self_improve import read_tree

    try:
        files = read_tree(agent_dir)
    except ProposalInvalid as e:
        raise click.ClickException(f"{agent_dir}: {e}") from None
    job = EvalJob(0, files, name, opts, list(stages) or None, SandboxSpec(backend, trusted), seed,
                  fm_calls=cfg.evaluation.fm_calls, fm_tokens=cfg.evaluation.fm_tokens)
    with open_fm(cfg.fm, log=lambda m: click.echo(f"dgm: {m}", err=True)) as fm:
        env = EvaluationEnvironment(fm=fm, evaluators={name: evaluator})
        try:
            return run_job(job, env)
        finally:
            env.close()


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise click.BadParameter(f"{text!r}: expected KEY=VALUE", param_hint="--option")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value
