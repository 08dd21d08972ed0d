"""The efficacy table's summary: what it counts as valid, and against which spread a held-out gain is held."""

from tests.bench_scripts import load_bench
from tests.test_racing import noisy_campaign  # noqa: F401  (a fixture: a real campaign on a noisy evaluator)


def _bench():
    return load_bench("bench_efficacy")


def _entry(seed, fits, fm_valid, held_spread=None):
    seed_node = {"score": 0.80, "held_out": {"hidden_score": 0.80}, "draw_spread": 0.0}
    if held_spread is not None:
        seed_node["held_out_spread"] = {"hidden_score": held_spread}
    return {"suite": "continual", "random_seed": seed, "iterations": 30, "mix": {"diff": 0.75, "fit": 0.25},
            "valid_share": (fits + fm_valid) / 30, "gain_over_seed": 0.02, "run_dir": f"/r/{seed}",
            "operators": {"fit": {"attempts": fits, "valid": fits}, "diff": {"attempts": 30 - fits, "valid": fm_valid}},
            "seed": seed_node, "best": {"score": 0.82, "held_out": {"hidden_score": 0.81}}}


def test_the_summary_counts_the_model_written_children_apart_from_fit():
    # seed 1 drew fit 14 times and all were valid: the share of all children rises, the model's does not
    out = _bench().summary([_entry(0, 5, 10), _entry(1, 14, 6)])
    (row,) = out.values()
    assert row["valid_share_range"] == [15 / 30, 20 / 30]
    assert row["model_valid_share_range"] == [6 / 16, 10 / 25]


def test_the_summary_says_against_which_spread_each_held_out_gain_was_held():
    out = _bench().summary([_entry(0, 5, 10), _entry(1, 5, 10, held_spread=0.004)])
    (row,) = out.values()
    assert row["held_out_spread_of"] == ["public score draws", "held-out draws"]
    assert row["held_out_beats_twice_the_seed_spread"] == "2 of 2"  # +0.01 > 2 x 0 and > 2 x 0.004


def test_the_seed_and_the_best_are_measured_again_until_each_has_as_many_draws(noisy_campaign, tmp_path, monkeypatch):
    """One draw each (no noise measurement, no race): the held-out gain of one draw of the best
    against one of the seed says nothing. ``--measure-run`` evaluates both on new evaluation seeds,
    under the run's own config, and rebuilds the entry from the means and the seed's spread."""
    import json
    import sys

    import pytest

    bench = _bench()
    noisy_campaign(["QUALITY = 0.56\n"], noise_evals=1, race=3).close()
    run = tmp_path / "run"
    results = tmp_path / "efficacy.json"
    results.write_text(json.dumps([{"suite": "noisy", "random_seed": 0, "run_dir": str(run)}]))
    monkeypatch.setattr(bench, "RESULTS", results)
    monkeypatch.setattr(bench, "HELD_OUT", {"noisy": "hidden_quality"})
    monkeypatch.setattr(sys, "argv", ["bench_efficacy.py", "--measure-run", str(run), "--draws", "3"])
    bench.main()
    (entry,) = json.loads(results.read_text())
    assert entry["remeasured"]["added"] == {"0": 2, "1": 2}
    # the noise of draws 0, 1, 2 is +0.04, -0.03, +0.01 (the Noisy evaluator's), for both programs
    assert entry["seed"]["draws"] == pytest.approx([0.54, 0.47, 0.51]) and entry["best"]["draws"] == pytest.approx([0.60, 0.53, 0.57])
    gain = bench.held_out_gain(entry)
    assert gain["seed"] == pytest.approx(0.41333333) and gain["best"] == pytest.approx(0.47333333)
    assert gain["spread_of"] == "held-out draws" and gain["seed_spread"] == pytest.approx(0.0702377, abs=1e-6)
    assert not gain["beats_twice_the_spread"]  # +0.06 is inside 2 x 0.070: one draw each said +0.06 against 0
    # enough draws already: nothing is added
    bench.main()
    assert json.loads(results.read_text())[0]["remeasured"]["added"] == {}


def test_the_held_out_gain_is_also_given_draw_by_draw_beside_the_unpaired_criterion():
    """optimizer seed 2: the held-out tasks of draw 1 were hard for both programs (seed 0.17, best
    0.28), so the seed's spread (0.48) swamps a gain the best showed on two draws of three."""
    import pytest

    e = _entry(2, 5, 10, held_spread=0.479)
    e["seed"]["held_out_draws"] = {"hidden_score": [1.0, 0.1705, 1.0]}
    e["best"]["held_out_draws"] = {"hidden_score": [1.0727, 0.2755, 0.9842]}
    gain = _bench().held_out_gain(e)
    assert not gain["beats_twice_the_spread"]  # the criterion is unchanged
    assert gain["paired_gains"] == pytest.approx([0.0727, 0.105, -0.0158])
    assert gain["paired_mean"] == pytest.approx(0.05397, abs=1e-5) and gain["paired_sd"] == pytest.approx(0.06254, abs=1e-5)
    (row,) = _bench().summary([e]).values()
    assert row["held_out_paired_mean"] == [0.054] and row["held_out_beats_twice_the_seed_spread"] == "0 of 1"
    # a best whose draw on seed 1 failed: its draws ran on seeds 0, 2 and 3, and pair by seed
    e["best"]["draw_seeds"], e["seed"]["draw_seeds"] = [0, 2, 3], [0, 1, 2]
    gain = _bench().held_out_gain(e)
    assert gain["paired_seeds"] == [0, 2] and gain["paired_gains"] == pytest.approx([0.0727, 0.2755 - 1.0])
    del e["best"]["held_out_draws"]  # a best measured once: nothing to pair
    assert "paired_mean" not in _bench().held_out_gain(e)


def test_runs_with_other_mutation_keys_are_summarised_apart_and_the_keys_parse_as_json():
    bench = _bench()
    changed = {**_entry(2, 5, 10), "mutation": {"run_repairs": 3}, "run_dir": "/r/2b"}
    out = bench.summary([_entry(0, 5, 10), {**_entry(1, 5, 10), "mutation": {}}, changed])
    assert sorted(row["seeds"] for row in out.values()) == [[0, 1], [2]]
    assert any(key.endswith('[mutation] {"run_repairs": 3}') for key in out)
    assert bench.parse_mutation(["run_repairs=2", 'ideas=["Use momentum."]', "idea_choice=yield"]) == {
        "run_repairs": 2, "ideas": ["Use momentum."], "idea_choice": "yield"}
    from orchestrator.config import MutationSection

    default = MutationSection(exemplars=2).model_dump(mode="json")  # dgm init's campaign: no overrides
    assert bench.mutation_overrides(default) == {}
    assert bench.mutation_overrides({**default, "run_repairs": 3, "idea_choice": "yield"}) == {"run_repairs": 3}


def test_a_refused_mutation_key_leaves_no_temporary_campaign_behind(tmp_path, monkeypatch):
    import tempfile

    import pytest

    bench = _bench()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where mkdtemp / TemporaryDirectory make theirs
    with pytest.raises(ValueError, match="no_such_key"):
        bench.run_one("circle_packing", 0, 1, None, None, mutation={"no_such_key": 1})
    assert list(tmp_path.iterdir()) == []
