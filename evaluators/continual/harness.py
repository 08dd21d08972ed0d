"""Runs inside the sandbox (started by ``_dgm_runtime.py``): trains the candidate's Strategy on each
continual stream, writes predictions.

Reads the config and ``_dgm_data.npz`` (training data and label-free test inputs; the file is
deleted once loaded), then for every run: a fresh fixed MLP, a fresh copy of the strategy module, and for
each task ``before_task`` → ``observe`` × iterations → ``after_task``. Every ``eval_every``
iterations (and after ``after_task``) the strategy predicts the test inputs; only the predicted
classes (int8) leave the sandbox, in ``preds.npz``. The evaluator scores them against labels it kept.

Budgets are measured here, in steps and bytes, never in seconds:
- data held by the strategy (recursively over its attributes, its class and module globals) after
  each task: at most ``buffer_size`` examples' worth of bytes; tensors shaped like a model parameter
  (importance weights, anchors, optimiser moments, teacher copies) at most ``param_copies`` models;
- rows forwarded through the model per task (observe/before_task/after_task; evaluation excluded):
  at most ``passes × iterations × batch_size``.
A violation, a non-finite or wrongly shaped prediction is written to ``report.json`` (exit code 3).
"""
import importlib.util
import os
import sys
import types
from collections import deque
from types import SimpleNamespace

import numpy as np
import torch
from _dgm_runtime import Violation, produce, setup_torch, take_inputs


def make_model(input_dim, hidden, num_classes):
    return torch.nn.Sequential(
        torch.nn.Linear(input_dim, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, num_classes),
    )


def load_strategy_module(path):
    """A fresh module object per run, so no state survives from one run to the next."""
    spec = importlib.util.spec_from_file_location("strategy", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["strategy"] = module
    spec.loader.exec_module(module)
    return module


_SKIP = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, type,
         torch.device, torch.dtype, torch.Generator)


def held_bytes(roots, model, param_shapes):
    """Bytes of data the roots hold, split into (parameter-shaped, other). Live model weights excluded.

    Tensors are counted once per storage (views of one buffer count the whole buffer), numpy arrays
    once per base, Python numbers as 8 bytes, str/bytes by length.
    """
    live = list(model.parameters()) + list(model.buffers())
    live += [p.grad for p in model.parameters() if p.grad is not None]
    exclude = {t.untyped_storage().data_ptr() for t in live}
    seen, storages = set(), {}
    param_b = other_b = 0
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            if obj.layout != torch.strided:
                other_b += obj.numel() * obj.element_size()
                continue
            storage = obj.untyped_storage()
            ptr = storage.data_ptr()
            if ptr in exclude or ptr in storages or storage.nbytes() == 0:
                continue  # the live model's weights and gradients are not the strategy's memory
            if obj.grad is not None:
                stack.append(obj.grad)
            is_param = tuple(obj.shape) in param_shapes and obj.numel() * obj.element_size() == storage.nbytes()
            storages[ptr] = storage.nbytes()
            if is_param:
                param_b += storage.nbytes()
            else:
                other_b += storage.nbytes()
        elif isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            if id(base) != id(obj):
                stack.append(base)
                continue
            if tuple(obj.shape) in param_shapes:
                param_b += obj.nbytes
            else:
                other_b += obj.nbytes
        elif isinstance(obj, (bool, int, float, complex)):
            other_b += 8
        elif isinstance(obj, (str, bytes, bytearray)):
            other_b += len(obj)
        elif isinstance(obj, memoryview):
            other_b += obj.nbytes
        elif obj is None or isinstance(obj, _SKIP):
            continue
        elif isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset, deque)):
            stack.extend(obj)
        else:
            if isinstance(obj, torch.optim.Optimizer):
                stack.append(obj.state)
                stack.append(obj.param_groups)
            if hasattr(obj, "__dict__"):
                stack.append(vars(obj))
            for slot in getattr(type(obj), "__slots__", ()):
                if isinstance(slot, str) and hasattr(obj, slot):
                    stack.append(getattr(obj, slot))
    return param_b, other_b


def strategy_roots(strategy, module):
    """The strategy object, the classes its module defines, and the module's own globals."""
    roots = [strategy]
    for name, value in vars(module).items():
        if name.startswith("__"):
            continue
        if isinstance(value, type) and getattr(value, "__module__", None) == module.__name__:
            roots.append({k: v for k, v in vars(value).items() if not k.startswith("__")})
        elif not isinstance(value, _SKIP):
            roots.append(value)
    return roots


class RowCounter:
    """Counts rows forwarded through the model (and any deep copy of it) while ``on``."""

    def __init__(self):
        self.on = False
        self.rows = 0

    def __call__(self, module, args):
        if self.on and args and isinstance(args[0], torch.Tensor) and args[0].dim() > 0:
            self.rows += int(args[0].shape[0])

    def __deepcopy__(self, memo):  # a deep copy of the model (a teacher, say) keeps counting here
        return self

    def __copy__(self):
        return self


def check_logits(out, n, num_classes, where):
    if not isinstance(out, torch.Tensor):
        raise Violation(f"predict returned {type(out).__name__} {where}, expected a tensor of logits ({n}, {num_classes})")
    if tuple(out.shape) != (n, num_classes):
        raise Violation(f"predict returned logits of shape {tuple(out.shape)} {where}, expected ({n}, {num_classes})")
    if not torch.isfinite(out).all():
        raise Violation(f"predict returned non-finite logits (NaN or inf) {where}")


def predict_all(strategy, counter, eval_x, eval_task, classes, seen, num_classes, where):
    counter.on = False
    with torch.no_grad():
        if eval_task is None:
            logits = strategy.predict(eval_x, None)
            check_logits(logits, len(eval_x), num_classes, where)
            pred = logits.argmax(dim=1)
        else:
            pred = torch.full((len(eval_x),), -1, dtype=torch.long, device=eval_x.device)
            for t in range(seen):
                rows = eval_task == t
                logits = strategy.predict(eval_x[rows], t)
                check_logits(logits, int(rows.sum()), num_classes, where + f" for task {t}")
                cls = classes[t]
                pred[rows] = cls[logits[:, cls].argmax(dim=1)]
    return pred.to("cpu", torch.int8).numpy()


def run_stream(run, data, cfg, entry):
    b = cfg["budget"]
    device = torch.device(cfg["device"])
    key, seed, scenario = run["id"], int(run["seed"]), run["scenario"]
    T, num_classes, input_dim = cfg["num_tasks"], cfg["num_classes"], cfg["input_dim"]
    train_x = [torch.as_tensor(data[f"{key}_x{t}"], device=device) for t in range(T)]
    train_y = [torch.as_tensor(data[f"{key}_y{t}"], device=device) for t in range(T)]
    eval_x = torch.as_tensor(data[f"{key}_eval_x"], device=device)
    eval_task = torch.as_tensor(data[f"{key}_eval_task"], device=device) if f"{key}_eval_task" in data else None
    classes = [torch.as_tensor(c, device=device) for c in run["task_classes"]]

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = make_model(input_dim, cfg["width"], num_classes).to(device)
    counter = RowCounter()
    model.register_forward_pre_hook(counter)
    param_shapes = {tuple(p.shape) for p in model.parameters()}
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    data_budget = b["buffer_size"] * (input_dim * 4 + 8 + num_classes * 4)
    param_budget = b["param_copies"] * model_bytes
    row_budget = b["passes"] * b["iterations"] * b["batch_size"]
    budget = SimpleNamespace(
        buffer_size=b["buffer_size"], batch_size=b["batch_size"], iterations=b["iterations"], passes=b["passes"],
        param_copies=b["param_copies"], lr=b["lr"], num_tasks=T, num_classes=num_classes, input_dim=input_dim,
        scenario=scenario, task_id_at_test=eval_task is not None, device=device, seed=seed,
    )
    module = load_strategy_module(entry)
    counter.on = True
    strategy = module.Strategy(model, num_classes, budget)
    preds, usage = [], {"data_bytes": 0, "param_bytes": 0, "rows": []}
    every = b["eval_every"]
    for t in range(T):
        counter.rows = 0
        counter.on = True
        strategy.before_task(t)
        n = len(train_y[t])
        order, pos = rng.permutation(n), 0
        for it in range(b["iterations"]):
            if pos + b["batch_size"] > n:
                order, pos = rng.permutation(n), 0
            idx = torch.as_tensor(order[pos : pos + b["batch_size"]], device=device)
            pos += b["batch_size"]
            counter.on = True
            strategy.observe(train_x[t][idx], train_y[t][idx], t)
            if (it + 1) % every == 0 and it + 1 < b["iterations"]:
                preds.append(predict_all(strategy, counter, eval_x, eval_task, classes, t + 1, num_classes,
                                         f"(task {t}, iteration {it + 1})"))
        counter.on = True
        strategy.after_task(t)
        counter.on = False
        preds.append(predict_all(strategy, counter, eval_x, eval_task, classes, t + 1, num_classes, f"(end of task {t})"))
        usage["rows"].append(counter.rows)
        if counter.rows > row_budget:
            raise Violation(
                f"compute budget exceeded in task {t}: the model processed {counter.rows} rows during training "
                f"(budget: passes {b['passes']} x iterations {b['iterations']} x batch_size {b['batch_size']} = {row_budget})"
            )
        param_b, data_b = held_bytes(strategy_roots(strategy, module), model, param_shapes)
        usage["data_bytes"] = max(usage["data_bytes"], data_b)
        usage["param_bytes"] = max(usage["param_bytes"], param_b)
        if data_b > data_budget:
            raise Violation(
                f"replay budget exceeded after task {t}: the strategy holds {data_b} bytes of data "
                f"(budget: buffer_size {b['buffer_size']} examples = {data_budget} bytes as float32 input, "
                f"int64 label and float32 logits)"
            )
        if param_b > param_budget:
            raise Violation(
                f"parameter-copy budget exceeded after task {t}: the strategy holds {param_b} bytes of "
                f"parameter-shaped tensors (budget: param_copies {b['param_copies']} x {model_bytes} bytes)"
            )
    return np.stack(preds), usage


def main(cfg):
    cfg["device"] = setup_torch(cfg)[1]
    data = take_inputs(cfg["data"])
    entry = os.path.abspath(cfg["entry"])

    def work(report):
        report["runs"], out = {}, {}
        for run in cfg["runs"]:
            out[run["id"]], report["runs"][run["id"]] = run_stream(run, data, cfg, entry)
        return out

    return produce(work, cfg["out"])
