"""The efficacy table's summary: what it counts as valid, and against which spread a held-out gain is held."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_efficacy", ROOT / "bench" / "bench_efficacy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
