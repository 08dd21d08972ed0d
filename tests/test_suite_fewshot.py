"""The few-shot suite: task sampling and score with exact values, MAML against no adaptation, and
the cheats and faults an inner loop can commit, driven through the real pipeline and sandbox."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pytest

from evaluators import registry
from evaluators.fewshot import FewShotEvaluator, score_from
from evaluators.fewshot.evaluator import public_seeds
from evaluators.fewshot.tasks import SHIFTED, TRAIN, TaskDistribution, query_mse, sample_eval_set
from evaluators.pipeline import evaluate
from sandboxes.factory import make_sandbox

HERE = Path(__file__).resolve().parents[1] / "evaluators" / "fewshot"
MAML, UNTRAINED = HERE / "seed", HERE / "reference" / "untrained"
MAML_CODE = (MAML / "inner_loop.py").read_text()


# -- pure parts ------------------------------------------------------------------------------------
def test_score_and_query_mse_exact_values():
    assert score_from({1: 2.0, 5: 1.0, 10: 0.0}, 4.0) == pytest.approx(0.75)
    assert score_from({1: 9.0, 5: 9.0, 10: 9.0}, 4.0) == 0.0  # worse than predicting 0: clipped
    preds = np.array([[[1.0, 2.0]], [[0.0, 0.0]]])  # 2 seeds, 1 task, 2 query points
    assert query_mse(preds, np.array([[1.0, 0.0]])).tolist() == [2.0, 0.5]


def test_eval_sets_follow_their_distribution_and_seed():
    s = sample_eval_set(TRAIN, 200, 10, 50, 0)
    assert s.support_x.shape == (200, 10, 1) and s.query_x.shape == (200, 50, 1) and s.query_y.shape == (200, 50)
    assert s.support_x.min() >= -5 and s.support_x.max() <= 5
    assert np.abs(s.query_y).max() <= 5.0
    assert np.array_equal(sample_eval_set(TRAIN, 5, 10, 50, 0).support_y, sample_eval_set(TRAIN, 5, 10, 50, 0).support_y)
    shifted = sample_eval_set(SHIFTED, 200, 10, 50, 0)
    assert np.abs(shifted.query_y).max() > 5.0  # amplitudes 5-7 lie outside the training range
    one = sample_eval_set(TaskDistribution((2.0, 2.0), (0.0, 0.0), (math.pi / 2, math.pi / 2)), 1, 1, 1, 0)
    assert one.query_y[0, 0] == pytest.approx(2.0)  # 2 sin(pi/2 - 0)


def test_options_are_checked_and_the_entry_point_loads():
    assert registry.load_class("fewshot") is FewShotEvaluator
    with pytest.raises(ValueError, match="seeds"):
        FewShotEvaluator(seeds=1)
    with pytest.raises(ValueError, match="unknown option"):
        FewShotEvaluator(inner_lr=0.1)


# -- through the sandbox ---------------------------------------------------------------------------
def evaluator(stage="smoke", **plan) -> FewShotEvaluator:
    ev = FewShotEvaluator()
    ev.plan[stage] = {"seeds": 1, "meta_iterations": 20, "tasks": 20, "hidden_tasks": 0, **plan}
    return ev


def run(ev, agent_dir, stage="smoke", seed=3):
    return evaluate(ev, agent_dir, make_sandbox("auto"), seed=seed, stages=[stage])


def make_agent(tmp_path: Path, code: str) -> Path:
    d = tmp_path / "agent"
    d.mkdir()
    (d / "agent.toml").write_text('[agent]\nentry = "inner_loop.py"\neditable = ["inner_loop.py"]\n')
    (d / "inner_loop.py").write_text(textwrap.dedent(code))
    return d


def test_maml_beats_no_adaptation_by_far():
    ev = evaluator("small", seeds=2, meta_iterations=600, tasks=100, hidden_tasks=50)
    maml, flat = run(ev, MAML, "small"), run(ev, UNTRAINED, "small")
    assert maml.stages[0].valid and flat.stages[0].valid, (maml.error, flat.error)
    m, f = maml.public_metrics, flat.public_metrics
    assert m["mse_10"] < 0.6 * f["mse_10"] and m["mse_1"] < f["mse_1"]
    assert m["mse_10"] < m["mse_1"] < m["mse_0"]  # more steps help MAML
    assert f["mse_0"] == f["mse_1"] == f["mse_10"]  # no adaptation: steps change nothing
    # the stage's own scores: the untrained inner loop is stopped by small's gate, so its evaluation has none
    assert maml.stages[0].score > flat.stages[0].score + 0.2 and flat.score is None
    assert m["mse_10_std"] > 0  # two seeds, two different meta-learners
    assert set(maml.private_metrics) == {"hidden_mse_1", "hidden_mse_5", "hidden_mse_10", "hidden_score"}
    assert not any(k.startswith("hidden") for k in m) and "hidden" not in maml.feedback


def test_public_seeds_follow_the_evaluation_seed():
    seeds, stream = public_seeds(7, 1, 3)
    assert (seeds, stream) == public_seeds(7, 1, 3) and len(set(seeds)) == 3
    assert public_seeds(8, 1, 3) != (seeds, stream) and public_seeds(7, 2, 3) != (seeds, stream)
    assert all(0 <= s < 2**31 for s in [*seeds, stream])


def test_a_program_evaluated_again_on_another_seed_is_measured_again():
    # with fixed public seeds every draw of a program scored the same, so racing saw no noise
    ev = evaluator(seeds=2, meta_iterations=30, tasks=30)
    first, again, other = run(ev, MAML, seed=3), run(ev, MAML, seed=3), run(ev, MAML, seed=4)
    assert first.valid and other.valid, (first.error, other.error)
    assert first.public_metrics == again.public_metrics  # one evaluation seed, one measurement
    assert first.public_metrics["mse_1"] != other.public_metrics["mse_1"]
    assert first.public_metrics["zero_mse"] == other.public_metrics["zero_mse"]  # the public tasks stay fixed


def test_unseen_tasks_of_the_training_distribution_are_scored_privately_when_asked():
    ev = FewShotEvaluator(unseen_tasks=40)
    ev.plan["smoke"] = {"seeds": 1, "meta_iterations": 20, "tasks": 20, "hidden_tasks": 0}
    first, other = run(ev, MAML, seed=3), run(ev, MAML, seed=4)
    assert first.valid and other.valid, (first.error, other.error)
    assert set(first.private_metrics) == {"unseen_mse_1", "unseen_mse_5", "unseen_mse_10", "unseen_score"}
    assert not any(k.startswith("unseen") for k in first.public_metrics) and "unseen" not in first.feedback
    assert 0.0 < first.private_metrics["unseen_score"] < 1.0
    # drawn by the evaluation seed, unlike the fixed public tasks
    assert first.private_metrics["unseen_mse_1"] != other.private_metrics["unseen_mse_1"]
    assert run(evaluator(), MAML, seed=3).private_metrics == {}  # off by default


def test_learned_step_sizes_through_init_params(tmp_path):
    # Meta-SGD: extra meta-parameters created by init_params are trained by the outer loop
    code = '''
    import torch
    from torch.func import grad

    def init_params(params):
        return {**params, **{"lr_" + k: torch.full_like(v, 0.01) for k, v in params.items()}}

    def adapt(params, support_x, support_y, loss_fn, steps):
        net = {k: v for k, v in params.items() if not k.startswith("lr_")}
        for _ in range(steps):
            g = grad(loss_fn)(net, support_x, support_y)
            net = {k: v - params["lr_" + k] * g[k] for k, v in net.items()}
        return net
    '''
    res = run(evaluator(), make_agent(tmp_path, code))
    assert res.valid, res.error


def test_query_targets_are_not_in_the_work_directory(tmp_path):
    code = MAML_CODE + '''

import os
import numpy as np

def init_params(params):
    found, checked = [], []
    for dirpath, dirs, files in os.walk(os.path.dirname(os.getcwd())):
        for name in files:
            path = os.path.join(dirpath, name)
            checked.append(name)
            if name.endswith(".npz"):
                with np.load(path) as z:
                    found += [k for k in z.files if "query_y" in k or "target" in k or k.endswith("_y") and "support" not in k]
            if any(s in name for s in ("target", "label", "query_y", "hidden")):
                found.append(path)
    raise RuntimeError(f"SNOOP checked={sorted(checked)} found={found}")
'''
    res = run(evaluator(), make_agent(tmp_path, code))
    assert "RuntimeError: SNOOP" in res.error, res.error
    report = res.error[res.error.index("RuntimeError: SNOOP"):].splitlines()[0]
    assert "found=[]" in report and "'inner_loop.py'" in report, report
    assert "_dgm_data.npz" not in report  # deleted by the harness before the candidate is imported


def test_extra_inner_steps_break_the_budget(tmp_path):
    code = MAML_CODE.replace("for _ in range(steps):", "for _ in range(2 * steps):")
    res = run(evaluator(), make_agent(tmp_path, code))
    assert not res.valid
    assert "inner-step budget exceeded: adapt called loss_fn 2 times with steps=1" in res.error, res.error


def test_meta_parameter_budget(tmp_path):
    code = MAML_CODE + '''

import torch

def init_params(params):
    return {**params, "memory": torch.zeros(100_000)}
'''
    res = run(evaluator(), make_agent(tmp_path, code))
    assert not res.valid and "meta-parameter budget exceeded" in res.error, res.error


def test_nan_predictions_are_invalid(tmp_path):
    code = MAML_CODE.replace("return params", "return {k: v * float('nan') for k, v in params.items()}")
    res = run(evaluator(), make_agent(tmp_path, code))
    assert not res.valid and "non-finite query predictions" in res.error, res.error


#: MAML as the embedded model writes it: torch.autograd.grad and a branch on a tensor's value, which
#: torch.func.vmap cannot run
AUTOGRAD_MAML = """
import torch

INNER_LR = 0.01


def adapt(params, support_x, support_y, loss_fn, steps):
    for _ in range(steps):
        loss = loss_fn(params, support_x, support_y)
        if loss.item() > 1e9:
            break
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        params = {k: p - INNER_LR * g for (k, p), g in zip(params.items(), grads)}
    return params
"""


def test_an_inner_loop_vmap_cannot_run_runs_task_by_task_with_the_same_result(tmp_path):
    ev = evaluator(seeds=2, meta_iterations=15, tasks=20, hidden_tasks=20)
    vmapped, looped = run(ev, MAML), run(ev, make_agent(tmp_path, AUTOGRAD_MAML))
    assert looped.valid, looped.error
    assert "adapt ran task by task, not under vmap" in looped.feedback and "item" in looped.feedback
    assert "task by task" not in vmapped.feedback
    # the same algorithm on the same seeds and tasks: the same numbers, up to float rounding
    for key, value in {**vmapped.public_metrics, **vmapped.private_metrics}.items():
        assert {**looped.public_metrics, **looped.private_metrics}[key] == pytest.approx(value, rel=1e-3, abs=1e-6), key
    assert vmapped.public_metrics["mse_10"] < vmapped.public_metrics["mse_0"]  # it did learn something


def test_task_by_task_keeps_the_inner_step_budget(tmp_path):
    code = AUTOGRAD_MAML.replace("for _ in range(steps):", "for _ in range(steps + 1):")
    res = run(evaluator(), make_agent(tmp_path, code))
    assert not res.valid
    assert "inner-step budget exceeded: adapt called loss_fn 2 times with steps=1" in res.error, res.error


def test_task_by_task_state_kept_between_tasks_is_a_violation(tmp_path):
    # under vmap a tensor kept from one call fails in the next; task by task it would carry support
    # sets from task to task (or meta-parameters outside the budget), so the harness refuses it
    code = AUTOGRAD_MAML.replace("INNER_LR = 0.01", "INNER_LR = 0.01\nSEEN = []").replace(
        "    return params", "    SEEN.append(support_y.detach())\n    return params")
    res = run(evaluator(), make_agent(tmp_path, code))
    assert not res.valid
    assert "adapt changed the module global(s) SEEN between calls" in res.error, res.error


def test_state_kept_on_loss_fn_is_a_violation(tmp_path):
    # the other place a task's support set could be kept for the next task: the loss_fn object
    code = MAML_CODE.replace("    return params", "    loss_fn.seen = support_y\n    return params")
    res = run(evaluator(), make_agent(tmp_path, code))
    assert not res.valid
    assert "adapt set loss_fn.seen: loss_fn keeps no state between calls" in res.error, res.error


def test_a_crash_reports_the_traceback_tail(tmp_path):
    code = MAML_CODE.replace("return params", "raise KeyError('marker-5678')")
    res = run(evaluator(), make_agent(tmp_path, code))
    assert not res.valid
    assert "KeyError: 'marker-5678'" in res.error and "in adapt" in res.error, res.error


def test_a_torch_optim_optimiser_in_adapt_is_invalid_with_a_hint_to_write_the_update(tmp_path):
    # the embedded model's commonest crash on this suite, kept even when the task rules it out
    code = MAML_CODE.replace("def adapt(", "import torch\n\n\ndef adapt(").replace(
        "    for _ in range(steps):", "    torch.optim.Adam(params, lr=0.01)\n    for _ in range(steps):")
    res = run(evaluator(), make_agent(tmp_path, code))
    assert not res.valid and "exit code 1" in res.error
    assert "torch.optim optimisers cannot run inside adapt" in res.error, res.error
    assert "write the update rule with tensor arithmetic" in res.error


def test_a_dict_of_tensors_used_as_one_tensor_gets_a_hint_to_work_per_key(tmp_path):
    # fewshot seed 3, node 23: gradient normalisation written on the gradient dict itself (the same error)
    code = MAML_CODE.replace("def adapt(", "import torch\n\n\ndef adapt(").replace(
        "        params = {", "        g = g / torch.norm(g)\n        params = {")
    res = run(evaluator(), make_agent(tmp_path, code))
    assert not res.valid and "AttributeError: 'dict' object has no attribute" in res.error, res.error
    assert "are dicts of tensors with the same keys: apply tensor operations to each value" in res.error
