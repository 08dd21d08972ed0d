"""Runs inside the sandbox (started by ``_dgm_runtime.py``): meta-trains through the candidate's
``adapt`` and writes query predictions.

Reads the config and ``_dgm_data.npz`` (evaluation tasks: support sets with targets, query inputs
without targets; the file is deleted once loaded). For every seed (all seeds at once with
``torch.func.vmap``): meta-parameters start from the fixed network's default init (optionally
reshaped by the candidate's ``init_params``), then a fixed number of meta-iterations of the fixed
outer loop: sample a batch of sinusoid tasks, ``adapt`` on each task's support set
(``train_steps`` inner steps, vmapped over tasks; task by task with plain autograd when ``adapt``
cannot run under vmap, decided at the first meta-iteration), query loss of the adapted network, Adam on the
meta-parameters through the whole inner loop (second order, ``torch.func.grad``).
Then, for each evaluation set and each number of steps, ``adapt`` on the given support sets and
predict the query inputs; only those predictions leave the sandbox (``preds.npz``).

Budgets, counted, never timed: ``adapt(..., steps)`` may call ``loss_fn`` at most ``steps`` times
per call; meta-parameters may hold at most ``param_factor`` x the network's parameter count.
A violation or a non-finite prediction is written to ``report.json`` (exit code 3).
"""
import importlib.util
import math
import os
import pickle
import sys
import types

import numpy as np
import torch
from _dgm_runtime import Violation, produce, setup_torch, take_inputs
from torch.func import grad, vmap

NETWORK = {"w1": (40, 1), "b1": (40,), "w2": (40, 40), "b2": (40,), "w3": (1, 40), "b3": (1,)}


def forward(params, x):
    """The fixed network 1-40-40-1 (ReLU); ``x`` is (n, 1)."""
    h = torch.relu(x @ params["w1"].T + params["b1"])
    h = torch.relu(h @ params["w2"].T + params["b2"])
    return h @ params["w3"].T + params["b3"]


def mse(params, x, y):
    return ((forward(params, x) - y) ** 2).mean()


class CountedLoss:
    """The ``loss_fn`` handed to ``adapt``: the support MSE, counting calls (one per inner step).
    It holds nothing else: an attribute set on it would carry data from task to task."""

    __slots__ = ("calls",)

    def __init__(self):
        self.calls = 0

    def __setattr__(self, name, value):
        if name != "calls":
            raise Violation(f"adapt set loss_fn.{name}: loss_fn keeps no state between calls (adapt must be a "
                            "pure function of its arguments; keep state in local variables)")
        object.__setattr__(self, name, value)

    def __call__(self, params, x, y):
        self.calls += 1
        return mse(params, x, y)

    def check(self, steps):
        """Raise when the calls since the count was reset exceed ``steps`` (the inner-step budget)."""
        if self.calls > steps:
            raise Violation(f"inner-step budget exceeded: adapt called loss_fn {self.calls} times with steps={steps}")


def default_init(generator, device):
    """PyTorch's ``nn.Linear`` default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases."""
    params = {}
    for name, shape in NETWORK.items():
        fan_in = NETWORK["w" + name[1:]][1]
        bound = 1.0 / math.sqrt(fan_in)
        params[name] = (torch.rand(shape, generator=generator) * 2 - 1).mul_(bound).to(device)
    return params


def load_component(path):
    spec = importlib.util.spec_from_file_location("inner_loop", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["inner_loop"] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "adapt", None)):
        raise Violation("inner_loop.py must define adapt(params, support_x, support_y, loss_fn, steps)")
    return module


def check_meta_params(theta, budget_elems):
    if not isinstance(theta, dict):
        raise Violation(f"init_params must return a dict of tensors, got {type(theta).__name__}")
    for name, shape in NETWORK.items():
        t = theta.get(name)
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise Violation(f"meta-parameter {name!r} must be a tensor of shape {shape}, got {got}")
    total = 0
    for name, t in theta.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise Violation(f"meta-parameter {name!r} must be a floating-point tensor")
        total += t.numel()
    if total > budget_elems:
        raise Violation(f"meta-parameter budget exceeded: {total} elements (budget: {budget_elems})")


def check_adapted(params, where):
    if not isinstance(params, dict) or any(k not in params for k in NETWORK):
        raise Violation(f"adapt must return a dict with the network's keys {list(NETWORK)} {where}")


def sample_tasks(gen, cfg, shape, device):
    """Sinusoid tasks y = A sin(x - phase): (x, y) of shape shape + (2K, 1)."""
    task = cfg["train_tasks"]
    amp = torch.empty(shape + (1, 1)).uniform_(*task["amplitude"], generator=gen)
    phase = torch.empty(shape + (1, 1)).uniform_(*task["phase"], generator=gen)
    x = torch.empty(shape + (2 * cfg["K"], 1)).uniform_(*task["x"], generator=gen)
    return x.to(device), (amp * torch.sin(x - phase)).to(device)


def main(cfg):
    cfg["device"] = setup_torch(cfg)[1]
    data = take_inputs(cfg["data"])

    def work(report):
        preds, info = run(os.path.abspath(cfg["entry"]), cfg, data)
        report.update(info)
        return preds

    return produce(work, cfg["out"])


def run(entry, cfg, data):
    device = torch.device(cfg["device"])
    seeds, K = cfg["seeds"], cfg["K"]
    module = load_component(entry)
    loss_fn = CountedLoss()

    def adapt(theta, sx, sy, steps):
        return module.adapt(theta, sx, sy, loss_fn, steps)

    # meta-parameters, one set per seed, stacked on a leading seed axis
    n_net = sum(math.prod(s) for s in NETWORK.values())
    per_seed = []
    for seed in seeds:
        torch.manual_seed(seed)
        theta = default_init(torch.Generator().manual_seed(seed), device)
        if callable(getattr(module, "init_params", None)):
            theta = module.init_params(theta)
        check_meta_params(theta, cfg["param_factor"] * n_net)
        per_seed.append(theta)
    keys = list(per_seed[0])
    if any(list(t) != keys or any(t[k].shape != per_seed[0][k].shape for k in keys) for t in per_seed):
        raise Violation("init_params must return the same keys and shapes for every seed")
    theta = {k: torch.stack([t[k].detach().float() for t in per_seed]).to(device) for k in keys}

    train_steps = cfg["train_steps"]
    loop = TaskByTask(adapt, loss_fn, module)

    def task_loss(th, x, y):
        adapted = adapt(th, x[:K], y[:K], train_steps)
        check_adapted(adapted, "(meta-training)")
        return mse(adapted, x[K:], y[K:])

    def seed_loss(th, x, y):  # mean query loss over a batch of tasks, for one seed
        return vmap(task_loss, in_dims=(None, 0, 0), randomness="different")(th, x, y).mean()

    def total_loss(th, x, y):
        return vmap(seed_loss, randomness="different")(th, x, y).sum()

    vmap_grad = grad(total_loss)
    mode, info = "vmap", {}
    m = {k: torch.zeros_like(v) for k, v in theta.items()}
    v2 = {k: torch.zeros_like(v) for k, v in theta.items()}
    lr, (b1, b2), eps = cfg["outer_lr"], (0.9, 0.999), 1e-8
    gen = torch.Generator().manual_seed(int(cfg["task_seed"]))
    for it in range(1, cfg["meta_iterations"] + 1):
        x, y = sample_tasks(gen, cfg, (len(seeds), cfg["meta_batch"]), device)
        if mode == "vmap":
            loss_fn.calls = 0
            try:
                g = vmap_grad(theta, x, y)
            except Violation:
                raise
            except Exception as e:
                if it != 1:
                    raise
                # decided once, at the first meta-iteration, so a run stays reproducible
                mode, info["vmap_error"] = "loop", f"{type(e).__name__}: {e}".splitlines()[0][:300]
            else:
                loss_fn.check(train_steps)
        if mode == "loop":
            g = loop.meta_grad(theta, x, y, K, train_steps)
        with torch.no_grad():
            for k in theta:  # Adam, per seed (element-wise, so seeds stay independent)
                m[k].mul_(b1).add_(g[k], alpha=1 - b1)
                v2[k].mul_(b2).addcmul_(g[k], g[k], value=1 - b2)
                step = lr * math.sqrt(1 - b2 ** it) / (1 - b1 ** it)
                theta[k] = theta[k] - step * m[k] / (v2[k].sqrt() + eps)
    preds = {}
    for name in cfg["eval_sets"]:
        sx = torch.as_tensor(data[f"{name}_support_x"], device=device)
        sy = torch.as_tensor(data[f"{name}_support_y"], device=device)
        qx = torch.as_tensor(data[f"{name}_query_x"], device=device)
        for steps in cfg["eval_steps"]:
            if mode == "loop":
                out = loop.predict(theta, sx, sy, qx, steps)
            else:
                loss_fn.calls = 0

                def predict(th, sx1, sy1, qx1, steps=steps):
                    adapted = adapt(th, sx1, sy1, steps) if steps else th
                    check_adapted(adapted, f"(evaluation, steps={steps})")
                    return forward(adapted, qx1)

                per_task = vmap(predict, in_dims=(None, 0, 0, 0), randomness="different")
                out = vmap(per_task, in_dims=(0, None, None, None), randomness="different")(theta, sx, sy, qx)
                loss_fn.check(steps)
            out = out.detach()
            if not torch.isfinite(out).all():
                raise Violation(f"non-finite query predictions (NaN or inf) after {steps} inner steps")
            preds[f"{name}_{steps}"] = out.squeeze(-1).to("cpu", torch.float32).numpy()
    return preds, {"meta_params": int(sum(v[0].numel() for v in theta.values())), "mode": mode, **info}


class TaskByTask:
    """The fallback when ``adapt`` cannot run under vmap (``.item()``, Python branches on tensor
    values, ``torch.autograd.grad``): one call per (seed, task), meta-gradients by ordinary
    autograd through all of them. The same protocol and budgets, about 12x slower (MAML's small
    stage: 293 s against 24 s under vmap, beside another evaluation on 2 cores).

    Each call gets its own copies of the seed's meta-parameters (non-leaf tensors that carry the
    meta-gradient), and the module's data globals must not change between calls: under vmap a
    tensor kept from one call fails in the next, here it would carry information from task to task
    (support sets of other evaluation tasks, or meta-parameters outside the budget)."""

    def __init__(self, adapt, loss_fn, module):
        self.adapt, self.loss_fn, self.module = adapt, loss_fn, module
        self.globals = None

    def _call(self, params, sx, sy, steps, where):
        self.loss_fn.calls = 0
        adapted = self.adapt(params, sx, sy, steps)
        self.loss_fn.check(steps)
        check_adapted(adapted, where)
        return adapted

    def _check_pure(self):
        """Raise when a data global of the candidate's module changed since the first check."""
        now = module_data(self.module)
        if self.globals is None:
            self.globals = now
            return
        changed = sorted(k for k in self.globals.keys() | now.keys() if self.globals.get(k) != now.get(k))
        if changed:
            raise Violation(f"adapt changed the module global(s) {', '.join(changed[:5])} between calls: adapt runs "
                            "once per task and must be a pure function of its arguments (keep state in local variables)")

    def meta_grad(self, theta, x, y, K, steps):
        self._check_pure()
        leaves = {k: v.detach().requires_grad_() for k, v in theta.items()}
        total = 0.0
        for s in range(x.shape[0]):
            losses = []
            for t in range(x.shape[1]):
                params = {k: v[s].clone() for k, v in leaves.items()}
                adapted = self._call(params, x[s, t, :K], y[s, t, :K], steps, "(meta-training)")
                losses.append(mse(adapted, x[s, t, K:], y[s, t, K:]))
            total = total + torch.stack(losses).mean()
        self._check_pure()
        if not (isinstance(total, torch.Tensor) and total.requires_grad):
            return {k: torch.zeros_like(v) for k, v in theta.items()}  # adapt cut the graph: no signal
        grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
        return {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(theta.items(), grads)}

    def predict(self, theta, sx, sy, qx, steps):
        out = []
        for s in range(next(iter(theta.values())).shape[0]):
            leaves = {k: v[s].detach().requires_grad_() for k, v in theta.items()}
            rows = []
            for t in range(sx.shape[0]):
                params = {k: v.clone() for k, v in leaves.items()}
                adapted = self._call(params, sx[t], sy[t], steps, f"(evaluation, steps={steps})") if steps else params
                rows.append(forward(adapted, qx[t]).detach())
            out.append(torch.stack(rows))
        self._check_pure()
        return torch.stack(out)


def module_data(module):
    """The candidate module's data globals (not modules, functions or classes), as comparable bytes."""
    out = {}
    for name, value in vars(module).items():
        if name.startswith("__") or isinstance(value, types.ModuleType) or callable(value):  # functions, classes
            continue
        try:
            out[name] = pickle.dumps(value)
        except Exception:
            out[name] = repr(type(value))  # unpicklable: only a rebinding to another type shows
    return out
