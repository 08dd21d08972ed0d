"""The continual-learning suite: metric formulas with exact values, reference orderings, and the
cheats and faults a strategy can commit, each driven through the real pipeline and sandbox."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from evaluators import registry
from evaluators.continual import ContinualEvaluator
from evaluators.continual.metrics import (
    acc,
    accuracy_curve,
    accuracy_matrix,
    bwt,
    continual_metrics,
    forgetting,
    min_acc,
    wc_acc,
)
from evaluators.continual.scenarios import digits, make_stream
from evaluators.pipeline import evaluate
from sandboxes.factory import make_sandbox

HERE = Path(__file__).resolve().parents[1] / "evaluators" / "continual"
SEED, NAIVE, EWC = HERE / "seed", HERE / "reference" / "naive", HERE / "reference" / "ewc"

# 3 tasks, 2 evaluation points per task; the second point of each task is its end.
CURVE = np.array([
    [0.5, 0.0, 0.0],
    [0.9, 0.1, 0.0],  # end of task 0
    [0.4, 0.6, 0.0],
    [0.7, 0.8, 0.2],  # end of task 1
    [0.3, 0.5, 0.6],
    [0.6, 0.7, 0.9],  # end of task 2
])
ENDS = [1, 3, 5]


# -- metrics ---------------------------------------------------------------------------------------
def test_metrics_on_a_hand_made_curve():
    R = accuracy_matrix(CURVE, ENDS)
    assert R.tolist() == [[0.9, 0.1, 0.0], [0.7, 0.8, 0.2], [0.6, 0.7, 0.9]]
    assert acc(R) == pytest.approx(2.2 / 3)
    assert bwt(R) == pytest.approx(((0.6 - 0.9) + (0.7 - 0.8)) / 2)  # -0.2
    assert forgetting(R) == pytest.approx(((0.9 - 0.6) + (0.8 - 0.7)) / 2)  # 0.2
    # lowest accuracy after each finished task: task 0 over points 2..5, task 1 over points 4..5
    assert min_acc(CURVE, ENDS) == pytest.approx((0.3 + 0.5) / 2)
    assert wc_acc(CURVE, ENDS) == pytest.approx(0.9 / 3 + (2 / 3) * 0.4)
    m = continual_metrics(CURVE, ENDS)
    assert (m.acc, m.bwt, m.forgetting, m.min_acc, m.wc_acc) == pytest.approx((2.2 / 3, -0.2, 0.2, 0.4, 0.3 + 0.8 / 3))


def test_forgetting_ignores_accuracy_before_a_task_was_learned():
    curve = CURVE.copy()
    curve[1, 1] = 0.95  # task 1 looked good by chance before it was trained
    assert forgetting(accuracy_matrix(curve, ENDS)) == pytest.approx(0.2)


def test_accuracy_curve_counts_rows_per_task():
    preds = np.array([[0, 1, 2, 2], [0, 0, 3, 2]])
    labels = np.array([0, 1, 2, 3])
    row_task = np.array([0, 0, 1, 1])
    assert accuracy_curve(preds, labels, row_task, 2).tolist() == [[1.0, 0.5], [0.5, 0.0]]


# -- data ------------------------------------------------------------------------------------------
def test_streams_keep_test_images_out_of_training_and_scramble_pixels():
    d = digits()
    train = {row.tobytes() for row in d.x_train}
    assert not any(row.tobytes() in train for row in d.x_test)
    s = make_stream("class_il", 0)
    assert sorted(c for cs in s.task_classes for c in cs) == list(range(10))
    assert len(s.eval_x) == len(d.y_test) and sorted(s.eval_y.tolist()) == sorted(d.y_test.tolist())
    raw = {row.tobytes() for row in d.x_test}
    assert not any(row.tobytes() in raw for row in s.eval_x)  # per-run pixel permutation
    dom = make_stream("domain_il", 1)
    assert len(dom.eval_x) == 5 * len(d.y_test) and np.bincount(dom.row_task).tolist() == [len(d.y_test)] * 5


def test_options_are_checked_and_the_entry_point_loads():
    assert registry.load_class("continual") is ContinualEvaluator
    with pytest.raises(ValueError, match="scenarios"):
        ContinualEvaluator(scenarios=["class_il", "nope"])
    with pytest.raises(ValueError, match="unknown option"):
        ContinualEvaluator(epochs=3)


# -- through the sandbox ---------------------------------------------------------------------------
def evaluator(scenarios, public=1, hidden=0, stage="smoke", **options) -> ContinualEvaluator:
    ev = ContinualEvaluator(scenarios=scenarios, **options)
    ev.plan[stage] = {"public": public, "hidden": hidden}
    return ev


def run(ev, agent_dir, stage="smoke", seed=3):
    return evaluate(ev, agent_dir, make_sandbox("auto"), seed=seed, stages=[stage])


def make_agent(tmp_path: Path, code: str) -> Path:
    d = tmp_path / "agent"
    d.mkdir()
    (d / "agent.toml").write_text('[agent]\nentry = "strategy.py"\neditable = ["strategy.py"]\n')
    (d / "strategy.py").write_text(textwrap.dedent(code))
    return d


NAIVE_CODE = (NAIVE / "strategy.py").read_text()


@pytest.mark.parametrize(
    "agent_dir, low, high",
    [(SEED, 0.6, 1.0), (NAIVE, 0.0, 0.3), (EWC, 0.0, 0.3)],
    ids=["replay", "naive", "ewc"],
)
def test_reference_orderings(agent_dir, low, high):
    res = run(evaluator(["class_il", "task_il"], public=2), agent_dir)
    assert res.valid, res.error
    m = res.public_metrics
    assert low < m["class_il_acc"] < high
    assert m["task_il_acc"] > 0.9  # with the task id given, every strategy does well
    assert 0.0 <= m["class_il_wc_acc"] <= m["class_il_acc"] + 1e-9
    assert res.stages[0].private == {}


def test_hidden_variants_are_private_and_drawn_from_the_evaluation_seed():
    ev = evaluator(["class_il"], public=1, hidden=1, stage="small")
    a, b = run(ev, SEED, "small", seed=1), run(ev, SEED, "small", seed=2)
    assert a.stages[0].valid and b.stages[0].valid, (a.error, b.error)
    assert a.public_metrics == b.public_metrics  # public runs use fixed seeds
    assert set(a.private_metrics) == {"hidden_class_il_acc", "hidden_class_il_wc_acc", "hidden_score"}
    assert a.private_metrics != b.private_metrics
    assert not any(k.startswith("hidden") for k in a.public_metrics)
    assert "hidden" not in a.feedback


def test_a_strategy_finds_no_labels_and_cannot_look_inputs_up(tmp_path):
    # Searches everything it can see near its work directory for label files or label-like keys,
    # checks the data file is gone, and tries to look its inputs up in scikit-learn's own digits.
    code = NAIVE_CODE + '''
import os, json
import numpy as np

SUSPECT = ("label", "eval_y", "row_task", "target", "hidden", "query_y", "answer")


def snoop(eval_x):
    found, checked = [], 0
    roots = [os.getcwd(), os.path.dirname(os.getcwd()), "/tmp", "/dev/shm"]
    import sys
    installs = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}  # visible read-only by design
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(dirpath, d)) not in installs]
            for name in files:
                path = os.path.join(dirpath, name)
                checked += 1
                if any(s in name.lower() for s in SUSPECT):
                    found.append(path)
                if name.endswith(".npz"):
                    try:
                        with np.load(path) as z:
                            found += [f"{path}:{k}" for k in z.files if any(s in k.lower() for s in SUSPECT)]
                    except Exception:
                        pass
                if name.endswith(".json"):
                    try:
                        text = open(path).read()
                    except Exception:
                        continue
                    found += [f"{path}:{s}" for s in SUSPECT if s in text.lower()]
    data_left = os.path.exists("_dgm_data.npz")
    rows = np.round(eval_x.cpu().numpy(), 3)
    try:
        from sklearn.datasets import load_digits  # the package is visible; its bundled data must not be
        d = load_digits()
        x = (d.data / 16.0 - 0.305) / 0.376
        table = {np.round(r, 3).tobytes(): int(t) for r, t in zip(x.astype(np.float32), d.target)}
        matches = sum(r.tobytes() in table for r in rows)
    except (OSError, FileNotFoundError) as e:
        matches = "unreadable"
    raise RuntimeError(f"SNOOP checked={checked} found={found} data_left={data_left} matches={matches}/{len(rows)}")


_predict = Strategy.predict


def predict(self, x, task_id):
    if getattr(self, "_task", 0) == 4:
        snoop(x)
    return _predict(self, x, task_id)


def before_task(self, task_id):
    self._task = task_id


Strategy.predict = predict
Strategy.before_task = before_task
'''
    res = run(evaluator(["class_il"]), make_agent(tmp_path, code))
    assert not res.valid
    assert "RuntimeError: SNOOP checked=" in res.error, res.error
    report = res.error[res.error.index("RuntimeError: SNOOP"):].splitlines()[0]
    checked = int(report.split("checked=")[1].split()[0])
    assert checked >= 3  # it did look: strategy.py, agent.toml, the harness, the config
    assert "found=[]" in report and "data_left=False" in report, report
    assert "matches=unreadable/" in report, report  # sklearn's bundled digits are hidden in the sandbox


def test_a_strategy_over_its_replay_budget_is_invalid(tmp_path):
    code = NAIVE_CODE + '''
_observe = Strategy.observe
KEPT = []  # a module global: walked as well as the strategy's attributes


def observe(self, x, y, task_id):
    KEPT.append((x.clone(), y.clone()))  # keeps every example it ever saw
    _observe(self, x, y, task_id)


Strategy.observe = observe
'''
    res = run(evaluator(["class_il"]), make_agent(tmp_path, code))
    assert not res.valid
    assert "replay budget exceeded after task 0" in res.error and "buffer_size 200" in res.error, res.error


EIGHT_PASSES = """
_observe = Strategy.observe


def observe(self, x, y, task_id):
    for _ in range(8):  # 8 passes over every batch: more than budget.passes = 5
        _observe(self, x, y, task_id)
"""

TEACHER = """
import copy
import torch

_observe = Strategy.observe


def observe(self, x, y, task_id):
    if not hasattr(self, "teacher"):
        self.teacher = copy.deepcopy(self.model)  # a deep copy is counted like the model
    with torch.no_grad():
        for _ in range(5):
            self.teacher(x)
    _observe(self, x, y, task_id)
"""


@pytest.mark.parametrize("extra, rows", [(EIGHT_PASSES, 8000), (TEACHER, 6000)], ids=["passes", "teacher"])
def test_a_strategy_over_its_compute_budget_is_invalid(tmp_path, extra, rows):
    code = NAIVE_CODE + extra + "\n\nStrategy.observe = observe\n"
    res = run(evaluator(["class_il"]), make_agent(tmp_path, code))
    assert not res.valid
    assert "compute budget exceeded in task 0" in res.error and f"{rows} rows" in res.error, res.error


def test_a_report_rewritten_after_the_harness_only_loses_its_words(tmp_path):
    # report.json lies in the work directory: an atexit hook rewrites it after the harness wrote it
    code = NAIVE_CODE + '''
import atexit, json


def _forge():
    with open("report.json", "w") as f:
        json.dump({"runs": ["not", "usage"], "violation": "forged"}, f)


atexit.register(_forge)
'''
    honest = run(evaluator(["class_il"]), NAIVE)
    res = run(evaluator(["class_il"]), make_agent(tmp_path, code))
    assert res.valid and not res.evaluator_error, res.error
    assert res.score == honest.score and "budget use" in honest.feedback and "budget use" not in res.feedback


def test_nan_predictions_are_invalid(tmp_path):
    code = NAIVE_CODE + '''
def predict(self, x, task_id):
    return self.model(x) * float("nan")


Strategy.predict = predict
'''
    res = run(evaluator(["class_il"]), make_agent(tmp_path, code))
    assert not res.valid
    assert "non-finite logits" in res.error and "task 0, iteration 5" in res.error, res.error


def test_wrong_logit_shape_is_invalid(tmp_path):
    code = NAIVE_CODE + '''
def predict(self, x, task_id):
    return self.model(x)[:, :2]


Strategy.predict = predict
'''
    res = run(evaluator(["class_il"]), make_agent(tmp_path, code))
    assert not res.valid and "expected (450, 10)" in res.error, res.error


def test_a_crash_reports_the_traceback_tail(tmp_path):
    code = NAIVE_CODE + '''
def after_task(self, task_id):
    if task_id == 1:
        raise ValueError("consolidation went wrong: marker-1234")


Strategy.after_task = after_task
'''
    res = run(evaluator(["class_il"]), make_agent(tmp_path, code))
    assert not res.valid
    assert "exit code 1" in res.error and "ValueError: consolidation went wrong: marker-1234" in res.error
    assert "strategy.py" in res.error and "in after_task" in res.error, res.error
