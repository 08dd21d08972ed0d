"""Runs inside the sandbox (started by ``_dgm_runtime.py``): train every task of the config with the
candidate's update rule.

For each task it loads the training arrays the evaluator wrote (``_dgm_task_<id>.npz``), runs
``steps`` updates for all seeds at once (the rule is applied per seed with ``torch.func.vmap``;
if the rule cannot run under vmap it is called seed by seed instead), and saves the final
parameters as ``params_<id>.npz``. The evaluator computes every loss that counts itself. A
non-finite loss or parameter stops with exit code 3 and a line starting ``diverged:``.

The evaluator imports :func:`train` from the package copy to run its tuned-Adam baseline on exactly
the same seeds, minibatches and gradient noise.
"""
import sys
import time


class HarnessFailure(Exception):
    def __init__(self, message: str, code: int = 3):
        super().__init__(message)
        self.code = code


class RuleRunner:
    """Applies ``update`` to every parameter tensor of every seed.

    Modes: ``batched`` (trusted elementwise rules with ``BATCHED = True``: called once on the
    (S, ...) tensors), ``vmap`` (default for candidates), ``loop`` (fallback: seed by seed).
    """

    def __init__(self, rule, params: dict, torch):
        self.rule, self.torch = rule, torch
        self.mode = "batched" if getattr(rule, "BATCHED", False) else "vmap"
        self.S = next(iter(params.values())).shape[0]
        self.state = self._init(params)

    def _init(self, params):
        rule = self.rule
        if self.mode == "batched":
            return {k: rule.init_state(p) for k, p in params.items()}
        if self.mode == "vmap":
            try:
                return self.torch.func.vmap(lambda ps: {k: rule.init_state(p) for k, p in ps.items()})(params)
            except Exception:
                self.mode = "loop"
        return [{k: rule.init_state(p[s]) for k, p in params.items()} for s in range(self.S)]

    def step(self, params: dict, grads: dict, step: int, total: int) -> dict:
        rule, torch = self.rule, self.torch
        if self.mode == "batched":
            out = {k: rule.update(params[k], grads[k], self.state[k], step, total) for k in params}
        elif self.mode == "vmap":
            def one_seed(ps, gs, ss):
                return {k: rule.update(ps[k], gs[k], ss[k], step, total) for k in ps}
            try:
                out = torch.func.vmap(one_seed)(params, grads, self.state)
            except Exception:
                if step != 1:
                    raise
                self.mode = "loop"  # decided once, at the first step, so runs stay reproducible
                self.state = self._init(params)
                return self.step(params, grads, step, total)
        else:
            new_params, new_states = {k: [] for k in params}, []
            for s in range(self.S):
                st = {}
                for k in params:
                    p, st[k] = _check(rule.update(params[k][s], grads[k][s], self.state[s][k], step, total), params[k][s], k, torch)
                    new_params[k].append(p)
                new_states.append(st)
            self.state = new_states
            return {k: torch.stack(v) for k, v in new_params.items()}
        new = {}
        for k in params:
            new[k], self.state[k] = _check(out[k], params[k], k, torch)
        return new


def _check(result, param, name, torch):
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict)):
        raise HarnessFailure(f"update() must return (new_param, new_state: dict), got {type(result).__name__}", 4)
    new, state = result
    if not isinstance(new, torch.Tensor) or new.shape != param.shape:
        shape = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
        raise HarnessFailure(f"update() returned a new {name} of shape {shape}, expected {tuple(param.shape)}", 4)
    return new.to(param.dtype), state


def train(spec: dict, arrays: dict, rule, seeds, data_seed: int, tasks, torch, device: str = "cpu") -> dict:
    """Run ``spec["steps"]`` updates of ``rule`` on the task for every seed; return final params (S, ...).

    Minibatch indices and gradient noise come from one CPU generator per seed, so a seed sees the
    same data whatever else is batched with it (the tuned-Adam baseline relies on this).
    """
    steps, kind = int(spec["steps"]), spec["kind"]
    params = {k: v.to(device) for k, v in tasks.init_params(spec, arrays, seeds).items()}
    gens = [torch.Generator().manual_seed((int(data_seed) * 7919 + int(s)) % (2**63)) for s in seeds]
    if kind == "mlp":
        X, Y = torch.as_tensor(arrays["x"]).to(device), torch.as_tensor(arrays["y"]).long().to(device)
        n, batch = len(X), int(spec["batch"])
    elif kind == "quadratic":
        eig, rot = torch.as_tensor(arrays["eig"]).to(device), torch.as_tensor(arrays["rot"]).to(device)
        x_star, noise = tasks.optimum(spec, seeds).to(device), float(spec["noise"])
    else:
        x_star = tasks.optimum(spec, seeds).to(device)
    runner = RuleRunner(rule, params, torch)
    for step in range(1, steps + 1):
        if kind == "quadratic":  # analytic gradient plus noise
            with torch.no_grad():
                x = params["x"]
                loss = tasks.quadratic_loss(x, x_star, eig, rot)
                g = ((x - x_star) @ rot.T * eig) @ rot
                g = g + noise * torch.stack([torch.randn(spec["dim"], generator=gen) for gen in gens]).to(device)
            grads = {"x": g}
        elif kind == "rosenbrock":  # analytic gradient
            with torch.no_grad():
                loss = tasks.rosenbrock_loss(params["x"], x_star)
                grads = {"x": tasks.rosenbrock_grad(params["x"], x_star)}
        else:
            live = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            idx = torch.stack([torch.randint(n, (batch,), generator=gen) for gen in gens]).to(device)
            loss = tasks.mlp_loss(live, X[idx], Y[idx])
            grads = dict(zip(live, torch.autograd.grad(loss.sum(), list(live.values()))))
            loss = loss.detach()
        if not torch.isfinite(loss).all():
            raise HarnessFailure(f"diverged: the training loss became non-finite at step {step}/{steps}")
        with torch.no_grad():
            params = runner.step(params, grads, step, steps)
    bad = [k for k, v in params.items() if not torch.isfinite(v).all()]
    if bad:
        raise HarnessFailure(f"diverged: non-finite parameters ({', '.join(bad)}) after {steps} steps")
    return params


def main(config: dict) -> int:
    import numpy as np

    import _dgm_tasks as tasks
    from _dgm_runtime import import_entry, setup_torch

    torch, device = setup_torch(config)
    entry = config["entry"]
    module = import_entry(entry)
    for fn in ("init_state", "update"):
        if not callable(getattr(module, fn, None)):
            print(f"{entry} defines no function {fn}(); see the task description", file=sys.stderr)
            return 4
    t0 = time.perf_counter()
    try:
        for task in config["tasks"]:
            with np.load(f"_dgm_task_{task['id']}.npz", allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            final = train(task["spec"], arrays, module, task["seeds"], task["data_seed"], tasks, torch, device)
            np.savez(f"params_{task['id']}.npz", **{k: v.detach().cpu().numpy().astype("float32") for k, v in final.items()})
    except HarnessFailure as e:
        print(str(e), file=sys.stderr, flush=True)
        return e.code
    print(f"trained {len(config['tasks'])} task(s) in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return 0
