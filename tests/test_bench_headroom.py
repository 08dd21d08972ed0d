"""The headroom bench: which programs it measures, how it pairs their draws with the seed's, and one
real sandboxed draw."""

import ast
from pathlib import Path

import pytest

from tests.bench_scripts import load_bench
from tests.test_racing import noisy_campaign  # noqa: F401  (a fixture: a real campaign on a noisy evaluator)

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    return load_bench("bench_headroom")


def test_gains_are_paired_by_draw_and_held_against_twice_the_seeds_spread():
    seed = [{"score": 0.8, "held_out": 0.6}, {"score": 0.7, "held_out": 0.8}, {"score": 0.9, "held_out": 1.0}]
    rows = {
        "seed": seed,
        # +0.5 on every draw: far above twice the seed's spread (2 x 0.2)
        "big": [{"score": 0.9, "held_out": 1.1}, {"score": 0.8, "held_out": 1.3}, {"score": 1.0, "held_out": 1.5}],
        # +0.1 on every draw: a real gain, paired sd 0, but inside the yardstick
        "small": [{"score": 0.8, "held_out": 0.7}, {"score": 0.7, "held_out": 0.9, "gated": "small"},
                  {"score": 0.9, "held_out": 1.1}],
        "broken": [{"error": "stage smoke: exit code 1"}, {"score": 0.1, "held_out": 0.1}, {"error": "boom"}],
    }
    out = _bench().summarise(rows, seed)
    assert out["twice_seed_spread"] == pytest.approx(0.4)
    big, small = out["programs"]["big"], out["programs"]["small"]
    assert big["held_out_gain"] == pytest.approx(0.5) and big["beats_twice_the_seed_spread"]
    assert small["held_out_gain"] == pytest.approx(0.1) and small["held_out_paired_sd"] == pytest.approx(0.0)
    assert not small["beats_twice_the_seed_spread"] and small["gated_draws"] == 1
    assert out["programs"]["seed"]["held_out_gain"] == 0.0
    assert out["programs"]["broken"] == {"draws_completed": 1, "errors": ["stage smoke: exit code 1", "boom"]}


def test_every_variant_is_an_agent_of_its_suite_that_differs_from_the_seed(tmp_path):
    bench = _bench()
    for suite in ("optimizer", "rl_objective", "fewshot"):
        programs = bench.programs_of(suite, [], tmp_path)
        assert next(iter(programs)) == "seed"
        variants = {n: p for n, p in programs.items() if n.startswith("variant/")}
        assert len(variants) >= 3, suite
        seed_text = (programs["seed"] / _entry(programs["seed"])).read_text()
        for name, path in variants.items():
            text = (path / _entry(path)).read_text()
            assert ast.dump(ast.parse(text)) != ast.dump(ast.parse(seed_text)), name
            if name.removeprefix("variant/") in bench.CONSTANTS[suite]:  # one line of the seed changed
                changed = [(a, b) for a, b in zip(seed_text.splitlines(), text.splitlines()) if a != b]
                assert len(changed) == 1 and len(text.splitlines()) == len(seed_text.splitlines()), name


def test_a_constant_is_set_on_its_own_line_and_a_missing_one_is_named():
    bench = _bench()
    source = ('"""Doc: LR = 1 here is text."""\nLR = 1e-2\nBETAS = (0.9, 0.99)\nNAME = "adam"\n\n\n'
              'def f():\n    LR = 5\n    return LR\n')
    out = bench.with_constants(source, {"LR": 0.03})
    assert out == source.replace("LR = 1e-2\n", "LR = 0.03\n")
    with pytest.raises(ValueError, match=r"update_rule.py: no module-level numeric constant 'BETAS'"):
        bench.with_constants(source, {"BETAS": 0.5}, "update_rule.py")
    with pytest.raises(ValueError, match="'NAME'"):  # a string is no numeric constant
        bench.with_constants(source, {"NAME": 0.5}, "update_rule.py")
    with pytest.raises(ValueError, match="'MOMENTUM'"):
        bench.with_constants(source, {"MOMENTUM": 0.9}, "update_rule.py")


def _entry(agent: Path) -> str:
    from evaluators.agent import load_manifest

    return load_manifest(agent).entry


def test_a_draw_runs_the_campaigns_stages_in_the_sandbox_and_reads_the_held_out_metric(tmp_path):
    bench = _bench()
    from evaluators import registry
    from orchestrator.cli.init_cmd import campaign_stages

    stages = campaign_stages(registry.load_class("optimizer"))
    assert stages == ["smoke", "small"]
    row = bench.draw(bench.programs_of("optimizer", [], tmp_path)["seed"], "optimizer", stages, seed=3)
    assert "error" not in row, row
    assert 0 < row["score"] <= 10 and 0 < row["held_out"] <= 10  # exp(-mean log ratio), clipped at e^3
    broken = bench.draw(ROOT / "no-such-agent", "optimizer", stages, seed=3)
    assert "error" in broken


def test_a_kept_runs_best_is_materialised_as_the_report_picks_it(noisy_campaign, tmp_path):
    """A campaign's best is measured beside the variants: the one `dgm report` names, as committed."""
    noisy_campaign(["QUALITY = 0.56\n", "QUALITY = 0.3\n"]).close()
    agent = _bench().best_of_run(tmp_path / "run", tmp_path / "out")
    assert agent.parent == tmp_path / "out" and (agent / "agent.toml").is_file()
    assert (agent / "q.py").read_text() == "QUALITY = 0.56\n"
