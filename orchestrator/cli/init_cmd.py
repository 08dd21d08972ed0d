"""``dgm init DIR --template NAME``: scaffold a ready-to-run campaign (config + seed agent), or a
plugin package (``--template plugin``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from orchestrator.config import DEFAULT_WEIGHTS, MutationSection

from evaluators import registry
from evaluators.agent import copy_agent

CAMPAIGN_TOML = """\
# dgm campaign. Run it with:  dgm run {config}
# Every key is optional except [evaluator].name; unknown keys are errors.

[campaign]
name = "{name}"
iterations = 30          # total child attempts; `dgm run` again resumes up to this
seed_agent = "seed"      # the agent every lineage starts from (agent.toml inside)
random_seed = {random_seed}

[evaluator]
name = "{evaluator}"
{stages}# options = {{}}          # evaluator-specific knobs

[fm]
provider = "embedded"    # offline Qwen2.5-Coder-1.5B; or "openai" with base_url + api_key_env
# model = "gpt-4o-mini"
# base_url = "https://api.openai.com/v1"
# api_key_env = "OPENAI_API_KEY"   # the key is read from this variable, never stored
timeout_s = 300
max_tokens = 1200
temperature = [0.5, 1.0] # sampled per call, with a fresh sampling seed per call
concurrency = 2          # proposals in flight

[mutation]
operators = {{ {operators} }}
# diff: SEARCH/REPLACE edits; tweak: one or two numbers; function: one whole function; rewrite: the
# whole file; fit: no FM call, fits the program's float constants by CMA-ES (16 trials, more while
# under 60 s: [mutation.fit] evaluations, seconds, max_evaluations)
# ideas = ["..."]        # directions to try, added to the evaluator's own; one per prompt
# idea_share = 0.5       # share of prompts that carry an idea
{mutation}
[selection]
method = "score_child_prop"   # score_prop | robust | best | uniform | module:function
per_operator = {{ fit = "best" }}   # fit tunes the best program's constants (a hill climb)

[admission]
policy = "keep_all_valid"     # keep_better | module:function
leeway = 0.1

[evaluation]
workers = 2

[sandbox]
backend = "auto"              # bwrap, else docker; "process" needs trusted = true

[budget]
# max_fm_calls = 100
# max_tokens = 500000
# max_usd = 5.0
# max_wall_s = 3600
# max_gpu_s = 7200        # GPU-seconds of evaluations (a shared GPU counts its share)
"""


#: templates whose campaign differs from the default. coding is DGM's own setting: the agent's own
#: improver writes each child; its full stage is long on CPU (every problem, and the held-out split)
TEMPLATE_OPERATORS = {"coding": {"self": 1.0}}
FULL_STAGE_NOTE = {"coding": 'add "full" to score all 124 problems and the held-out split (an hour or more on 2 cores)'}


#: the [mutation] keys ``dgm init`` writes after the operators (commented: a hint at the default)
MUTATION_LINES = {
    "idea_choice": '# idea_choice = "uniform"  # or "yield": ideas whose children beat their parent are shown more often',
    "exemplars": "exemplars = 2",
}


def _mutation_lines(overrides: dict[str, Any]) -> str:
    """The [mutation] lines after the operators: ``dgm init``'s, each key of ``overrides`` in place
    of its line or after them. A value must be a TOML scalar or a list of them (JSON spells both)."""
    lines = dict(MUTATION_LINES)
    for key, value in overrides.items():
        if key not in MutationSection.model_fields:
            raise ValueError(f"[mutation] {key}: no such key (known: {', '.join(sorted(MutationSection.model_fields))})")
        if key == "operators" or not isinstance(value, (str, int, float, bool, list)) or isinstance(value, list) and any(
                isinstance(v, (dict, list)) for v in value):
            raise ValueError(f"[mutation] {key} = {value!r}: give operators as their own argument, and other keys "
                             "as a string, number, boolean or list of those")
        lines[key] = f"{key} = {json.dumps(value)}"
    return "".join(line + "\n" for line in lines.values())


def campaign_stages(cls: Any) -> list[str]:
    """The stages a new campaign of evaluator class ``cls`` runs: all of them, less a last ``full``
    stage after two others (it is sized for a GPU). A bench that evaluates programs as a campaign
    would reads them here."""
    names = [s.name for s in cls.stages]
    return names[:-1] if len(names) > 2 and names[-1] == "full" else names


def write_campaign(dest: Path, evaluator: str, name: str | None = None, random_seed: int = 0,
                   operators: dict[str, float] | None = None, mutation: dict[str, Any] | None = None) -> Path:
    """Write ``dest/campaign.toml`` (and the seed agent beside it) for ``evaluator``; a script that
    runs campaigns with another random seed, operator mix or other [mutation] keys (``mutation``:
    ``{"idea_choice": "yield", "run_repairs": 2}``) writes them here, so the file stays the truth for
    ``dgm run`` (resume) and ``dgm remeasure`` on that run."""
    mutation_lines = _mutation_lines(mutation or {})  # a bad key fails before anything is written
    cls = registry.load_class(evaluator)
    dest.mkdir(parents=True, exist_ok=True)
    config = dest / "campaign.toml"
    if config.exists():
        raise click.ClickException(f"{config} already exists; choose another directory")
    copy_agent(cls().seed_agent(), dest / "seed")
    stages, runs = "", campaign_stages(cls)
    if runs != [s.name for s in cls.stages]:  # the full stage is left out: it is sized for a GPU
        note = FULL_STAGE_NOTE.get(evaluator, 'add "full" on a GPU machine')
        stages = f"stages = {runs!r}   # {note}\n".replace("'", '"')
    config.write_text(CAMPAIGN_TOML.format(config=config, name=name or dest.resolve().name, evaluator=evaluator, stages=stages,
        operators=", ".join(f"{k} = {v}" for k, v in (operators or TEMPLATE_OPERATORS.get(evaluator, DEFAULT_WEIGHTS)).items()),
        random_seed=int(random_seed), mutation=mutation_lines,
    ))
    return config


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--template", "-t", required=True, help="An evaluator name (see `dgm evaluators list`), or 'plugin'.")
@click.option("--name", help="Campaign (or plugin) name; default: the directory name.")
def init(directory: Path, template: str, name: str | None) -> None:
    """Create DIRECTORY with a campaign for TEMPLATE (or a plugin package)."""
    if template == "plugin":
        from orchestrator.cli.plugin_template import write_plugin

        where = write_plugin(directory, name)
        click.echo(f"created plugin package in {where}\nnext: .venv/bin/pip install -e {where} && dgm run {where}/campaign.toml")
        return
    config = write_campaign(directory, template, name)
    click.echo(f"created {config} and {directory / 'seed'}\nnext: dgm run {config}")
