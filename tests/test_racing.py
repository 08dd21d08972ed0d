"""Admission that sees through noise: the seed is measured several times, a child that could
become the best is raced on more evaluation seeds, and best/selection use the lower confidence
bound. A noisy evaluator whose draw depends only on the evaluation seed makes it exact."""

from __future__ import annotations

import json
import re

import pytest

from archive import Archive
from evaluators.api import CandidateInvalid, Evaluator, MetricSpec, Stage, StageOutcome
from orchestrator import plan as plan_module
from orchestrator.campaign import Campaign
from orchestrator.cli.archive_cmds import _summary
from orchestrator.config import load_config
from orchestrator.executor import EvaluationEnvironment, LocalExecutor
from orchestrator.fm.client import FMClient
from sandboxes.base import Limits
from tests.campaign_helpers import config_text, rewrite
from tests.fm_server import Reply, ScriptedFMServer

NOISE = [0.04, -0.03, 0.01, -0.04, 0.02]  # by evaluation draw (the seed offset)


class Noisy(Evaluator):
    """Scores QUALITY from q.py plus a noise term fixed by the evaluation seed."""

    name = "noisy"
    task = "Raise QUALITY."
    stages = [Stage("full", Limits(wall_s=5))]
    metrics = [MetricSpec("quality", -1, 2), MetricSpec("hidden_quality", -1, 2, public=False)]
    base_seed = 0

    def seed_agent(self):
        raise NotImplementedError

    def run_stage(self, stage, run):
        m = re.search(r"QUALITY = ([0-9.]+)", run.read_artifact("q.py").decode())
        if not m:
            raise CandidateInvalid("no QUALITY in q.py")
        q = float(m.group(1)) + NOISE[(run.seed - self.base_seed) % len(NOISE)]
        return StageOutcome(q, {"quality": q, "hidden_quality": q - 0.1 + NOISE[(run.seed - self.base_seed) % len(NOISE)]})


@pytest.fixture
def noisy_campaign(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_TEST_KEY", "k")
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "agent.toml").write_text('[agent]\nentry = "q.py"\neditable = ["q.py"]\n')
    (seed / "q.py").write_text("QUALITY = 0.5\n")

    def run(answers: list[str], evaluator: Evaluator | None = None, **admission):
        evaluator = evaluator or Noisy()
        monkeypatch.setattr(plan_module.registry, "create", lambda name, options=None: evaluator)
        with ScriptedFMServer([Reply(rewrite(a)) for a in answers]) as srv:
            text = config_text(srv.base_url, iterations=len(answers), workers=1).replace('name = "circle_packing"', 'name = "noisy"')
            text = text.replace("options = { timeout_s = 3 }", "")
            extra = "".join(f"{k} = {v}\n" for k, v in admission.items())
            (tmp_path / "campaign.toml").write_text(text + f"\n[admission]\n{extra}")
            cfg = load_config(tmp_path / "campaign.toml")
            cfg.campaign.seed_agent = seed
            cfg.fm.concurrency = 1
            with FMClient.from_config(cfg.fm) as fm:
                campaign = Campaign(cfg, tmp_path / "run", fm,
                                    executor=LocalExecutor(1, EvaluationEnvironment(evaluators={"noisy": evaluator})))
                evaluator.base_seed = campaign.eval_seed
                campaign.run()
        return Archive.open(tmp_path / "run", readonly=True)

    return run


def test_the_seed_is_measured_and_a_challenger_is_raced_before_it_can_be_best(noisy_campaign):
    with noisy_campaign(["QUALITY = 0.56\n", "QUALITY = 0.3\n"]) as archive:
        seed, high, low = archive.nodes()
        summary = _summary(archive)
    assert seed.draws == pytest.approx([0.54, 0.47, 0.51]) and seed.score == pytest.approx(0.5066667)
    assert high.draws == pytest.approx([0.60, 0.53, 0.57]) and high.score == pytest.approx(0.5666667)
    assert low.draws == pytest.approx([0.34])  # far below the best bound: one evaluation is enough
    # the held-out metric of each draw is kept too (private), so its own spread can be measured
    assert seed.private_draws == {"hidden_quality": pytest.approx([0.48, 0.34, 0.42])}
    assert low.private_draws == {} and low.private_metrics == {"hidden_quality": pytest.approx(0.28)}
    assert summary["best"]["id"] == high.id


class Steady(Noisy):
    """The same QUALITY on every evaluation seed; ``varying`` adds a public metric that moves."""

    name = "noisy"
    metrics = [MetricSpec("quality", -1, 2), MetricSpec("tokens", 0, 1e6)]

    def __init__(self, varying: bool) -> None:
        self.varying = varying

    def run_stage(self, stage, run):
        q = float(re.search(r"QUALITY = ([0-9.]+)", run.read_artifact("q.py").decode()).group(1))
        return StageOutcome(q, {"quality": q, "tokens": 100.0 + (run.seed - self.base_seed if self.varying else 0)})


@pytest.mark.parametrize("varying, seed_draws", [
    (False, 2),  # deterministic: two draws agree in everything, there is nothing more to measure
    (True, 3),  # a coarse score that repeats by chance (10 of 12 problems, twice) while the other
                # public metrics differ: not deterministic, so the seed gets all its noise evaluations
])
def test_two_equal_draws_stop_the_seed_only_when_every_public_metric_agrees(noisy_campaign, varying, seed_draws):
    with noisy_campaign(["QUALITY = 0.4\n"], Steady(varying=varying)) as archive:
        assert archive.get(0).draws == pytest.approx([0.5] * seed_draws)


def test_race_and_noise_measurement_can_be_turned_off(noisy_campaign):
    with noisy_campaign(["QUALITY = 0.56\n"], noise_evals=1, race=3) as archive:
        seed, child = archive.nodes()
    assert seed.draws == pytest.approx([0.54]) and child.draws == pytest.approx([0.60])  # no spread: no race


def test_archive_show_gives_the_draws_and_the_bound(noisy_campaign, tmp_path):
    from click.testing import CliRunner

    from orchestrator.cli import cli

    noisy_campaign(["QUALITY = 0.56\n"]).close()
    out = CliRunner().invoke(cli, ["archive", "show", str(tmp_path / "run"), "best"]).output
    assert "id: 1" in out and "draws: [0.6" in out and "(mean 0.5667, spread" in out and "lower bound" in out
    assert "on evaluation seeds +0, +1, +2 (mean" in out and "draw_seeds" not in out


def test_report_gives_seed_and_best_with_spreads_yield_and_calls_to_the_first_improvement(noisy_campaign, tmp_path):
    from click.testing import CliRunner

    from orchestrator.cli import cli

    noisy_campaign(["QUALITY = 0.56\n", "QUALITY = 0.3\n"]).close()
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "run"), "--out", str(tmp_path / "rep"), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["seed"]["draws"] == pytest.approx([0.54, 0.47, 0.51]) and rep["seed"]["draw_spread"] > 0
    # held-out: the mean over the draws, with its own spread (0.48, 0.34, 0.42)
    assert rep["seed"]["held_out"]["hidden_quality"] == pytest.approx(0.4133333)
    assert rep["seed"]["held_out_spread"]["hidden_quality"] == pytest.approx(0.0702377, abs=1e-6)
    assert rep["best"]["id"] == 1 and rep["gain_over_seed"] == pytest.approx(0.06)
    assert rep["fm_calls_to_first_improvement"] == 1 and rep["valid_share"] == 1.0
    assert rep["operators"]["rewrite"] == {"attempts": 2, "valid": 2, "better_than_parent": 1, "better_than_seed": 1}
    assert (tmp_path / "rep" / "best.png").stat().st_size > 1000
    text = CliRunner().invoke(cli, ["report", str(tmp_path / "run"), "--out", str(tmp_path / "rep")]).output
    assert "best: node 1 (rewrite) score 0.5667 ± " in text and "1 calls to the first improvement" in text
    assert "held-out: hidden_quality = 0.413333 ± 0.0702" in text
    # the same draw's noise hits both programs, so paired by evaluation seed the gain has no spread
    paired = rep["paired_gain"]
    assert paired["score"]["paired_gains"] == pytest.approx([0.06] * 3) and paired["score"]["paired_seeds"] == [0, 1, 2]
    assert paired["hidden_quality"]["paired_mean"] == pytest.approx(0.06) and paired["hidden_quality"]["paired_sd"] < 1e-9
    assert "paired by evaluation seed, score: +0.0600 ± 0.0000 over 3 seeds" in text
    assert "paired by evaluation seed, held-out hidden_quality: +0.0600" in text



def test_report_without_out_names_its_png_after_the_campaign(noisy_campaign, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from orchestrator.cli import cli

    noisy_campaign(["QUALITY = 0.56\n"]).close()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "run"), "--json"])
    assert res.exit_code == 0, res.output
    png = json.loads(res.output)["png"]
    assert png.endswith("-best.png") and png != "best.png" and (tmp_path / "cwd" / png).stat().st_size > 1000


def test_remeasure_adds_draws_on_new_seeds_to_a_known_program(noisy_campaign, tmp_path):
    from click.testing import CliRunner

    from orchestrator.cli import cli

    noisy_campaign(["QUALITY = 0.56\n", "QUALITY = 0.3\n", "NOTHING = 1\n"]).close()
    res = CliRunner().invoke(cli, ["remeasure", str(tmp_path / "campaign.toml"), "2", "--draws", "2"])
    assert res.exit_code == 0, res.output
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        low = archive.get(2)
        assert archive.count() == 4  # no new node: a re-measurement is not a proposal
    # its first draw was on the run's first evaluation seed; the new ones are on the next two
    assert low.draws == pytest.approx([0.34, 0.27, 0.31]) and low.score == pytest.approx(0.3066667)
    assert low.private_draws == {"hidden_quality": pytest.approx([0.28, 0.14, 0.22])}
    assert low.status.value == "admitted" and low.timings["remeasured"] == 2 and low.timings["remeasure_failed"] == 0
    assert "node 2: draws [0.34, 0.27, 0.31]" in res.output and "held-out draws: hidden_quality" in res.output
    # a node without a score is refused with the reason; so is a node that does not exist
    for ref, reason in (("3", "node 3 is invalid without a score"), ("7", "no node '7' (ids 0..3, or 'best')")):
        res = CliRunner().invoke(cli, ["remeasure", str(tmp_path / "campaign.toml"), ref])
        assert res.exit_code != 0 and reason in str(res.exception)


def test_remeasure_never_repeats_the_evaluation_seed_of_a_draw_that_failed(noisy_campaign, tmp_path):
    """A failed draw is not kept, so counting kept draws put the next re-measurement on the seed of
    the last kept one again (fewshot seed 3: the best's re-measured draws 2 and 3 were identical)."""
    from click.testing import CliRunner

    from orchestrator.cli import cli

    class FailsOnce(Noisy):  # node 2's program breaks on the evaluation seed of draw 1
        def run_stage(self, stage, run):
            if (run.seed - self.base_seed) % len(NOISE) == 1 and b"0.3" in run.read_artifact("q.py"):
                raise CandidateInvalid("diverged on this draw's tasks")
            return super().run_stage(stage, run)

    noisy_campaign(["QUALITY = 0.56\n", "QUALITY = 0.3\n"], evaluator=FailsOnce()).close()
    for draws in ("2", "1"):
        res = CliRunner().invoke(cli, ["remeasure", str(tmp_path / "campaign.toml"), "2", "--draws", draws])
        assert res.exit_code == 0, res.output
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        low = archive.get(2)
    # draws 0, 2 and 3 (1 failed): three different evaluation seeds, three different noise terms
    assert low.draws == pytest.approx([0.3 + NOISE[0], 0.3 + NOISE[2], 0.3 + NOISE[3]])
    assert low.timings["remeasured"] == 2 and low.timings["remeasure_failed"] == 1
    # each draw keeps the seed it ran on, so a report pairs it with the seed program's draw there
    assert low.draw_seeds == [0, 2, 3] and low.seed_offsets == [0, 2, 3]
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        assert archive.get(1).draw_seeds == list(range(len(archive.get(1).draws)))
