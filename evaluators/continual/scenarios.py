"""Continual-learning streams built from sklearn's digits (1,797 8x8 images, 10 classes).

One fixed stratified train/test split is shared by every stream, so no test image ever appears in
any run's training data (runs of one stage share a process; a strategy that memorised another
run's training pairs must not find the test labels there). Variants differ in the class order
(class- and task-incremental) or the pixel permutations (domain-incremental), drawn from a seed.
Every stream also scrambles the pixels with its own permutation first: the raw digits ship with
scikit-learn, which a candidate can read inside the sandbox, so test inputs must not match them.

- ``class_il``: 5 tasks of 2 classes; predict among all 10 classes, no task id at test time.
- ``task_il``: the same tasks; the task id is given at test time and logits are masked to its classes.
- ``domain_il``: 5 tasks, all 10 classes, each task a fixed random permutation of the 64 pixels;
  no task id at test time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

SCENARIOS = ("class_il", "task_il", "domain_il")
NUM_TASKS = 5
NUM_CLASSES = 10
INPUT_DIM = 64
SPLIT_SEED = 2023
TEST_FRACTION = 0.25
PIXEL_MEAN, PIXEL_STD = 0.305, 0.376  # over all training pixels of the fixed split, scaled to [0, 1]


@dataclass(frozen=True)
class Digits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@lru_cache(maxsize=1)
def digits() -> Digits:
    """The fixed split, stratified, 25 % test; pixels standardised with one global mean and SD
    (scalars, so no per-pixel statistics of later tasks leak into earlier ones)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = ((data.data / 16.0 - PIXEL_MEAN) / PIXEL_STD).astype(np.float32)
    y = data.target.astype(np.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    test = np.zeros(len(y), dtype=bool)
    for c in range(NUM_CLASSES):
        rows = np.flatnonzero(y == c)
        test[rng.choice(rows, size=int(round(len(rows) * TEST_FRACTION)), replace=False)] = True
    return Digits(x[~test], y[~test], x[test], y[test])


@dataclass
class Stream:
    """One continual-learning run. Everything but ``eval_y`` and ``row_task`` goes to the harness
    (``row_task`` too in task-IL, where the task id is part of the input)."""

    scenario: str
    train_x: list[np.ndarray]
    train_y: list[np.ndarray]
    eval_x: np.ndarray  # test inputs of every task, rows shuffled
    task_classes: list[list[int]]  # classes of each task (all 10 in domain-IL)
    eval_y: np.ndarray = field(repr=False)  # kept by the evaluator
    row_task: np.ndarray = field(repr=False)  # task of each eval row

    @property
    def task_id_at_test(self) -> bool:
        return self.scenario == "task_il"


def make_stream(scenario: str, seed: int | np.random.SeedSequence) -> Stream:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    rng = np.random.default_rng(seed)
    d = digits()
    # A per-run pixel permutation (costless for an MLP) so that a candidate cannot look its test
    # inputs up in the copy of the digits that ships with scikit-learn inside the sandbox.
    base = rng.permutation(INPUT_DIM)
    d = Digits(d.x_train[:, base], d.y_train, d.x_test[:, base], d.y_test)
    if scenario == "domain_il":
        perms = [rng.permutation(INPUT_DIM) for _ in range(NUM_TASKS)]
        train_x = [d.x_train[:, p] for p in perms]
        train_y = [d.y_train.copy() for _ in perms]
        eval_x = np.concatenate([d.x_test[:, p] for p in perms])
        eval_y = np.tile(d.y_test, NUM_TASKS)
        row_task = np.repeat(np.arange(NUM_TASKS), len(d.y_test))
        classes = [list(range(NUM_CLASSES))] * NUM_TASKS
    else:
        order = rng.permutation(NUM_CLASSES)
        per = NUM_CLASSES // NUM_TASKS
        classes = [sorted(int(c) for c in order[t * per : (t + 1) * per]) for t in range(NUM_TASKS)]
        task_of_class = np.empty(NUM_CLASSES, dtype=np.int64)
        for t, cs in enumerate(classes):
            task_of_class[cs] = t
        train_task = task_of_class[d.y_train]
        train_x = [d.x_train[train_task == t] for t in range(NUM_TASKS)]
        train_y = [d.y_train[train_task == t] for t in range(NUM_TASKS)]
        eval_x, eval_y = d.x_test, d.y_test
        row_task = task_of_class[d.y_test]
    shuffle = rng.permutation(len(eval_y))
    return Stream(scenario, train_x, train_y, eval_x[shuffle], classes, eval_y[shuffle], row_task[shuffle])
