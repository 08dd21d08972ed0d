"""Optimisation tasks of the optimizer suite, batched over ``S`` independent seeds.

Shared by the harness (a copy, ``_dgm_tasks.py``, trains in the sandbox) and the evaluator (scores
the saved parameters on what it kept back). Three kinds, all with a known minimum location that
moves with the seed, so that no update rule can guess it:

* ``mlp``: a ReLU MLP classifier (cross-entropy) on a bundled sklearn dataset. The evaluator
  standardises the features, applies a secret random rotation and label permutation, and keeps a
  held-out split; the sandbox only ever gets the training split.
* ``quadratic``: f(x) = 1/2 sum_i lam_i (R (x - x*))_i^2, eigenvalues log-spaced over [1/cond, 1],
  R a random rotation or the identity; gradients carry Gaussian noise of std ``noise``; the score
  uses the noise-free f.
* ``rosenbrock``: the chained Rosenbrock function shifted so its minimum sits at a random x*;
  exact gradients; start at the classic (-1.2, 1, ...) relative to the minimum.

Parameters are dicts of float32 tensors with a leading seed axis; ``init_params`` is deterministic
in (spec, seed).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

DATASETS = ("digits", "wine", "breast_cancer")


# --------------------------------------------------------------------------- data (evaluator side)
@functools.lru_cache(maxsize=None)
def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    loader = {"digits": datasets.load_digits, "wine": datasets.load_wine, "breast_cancer": datasets.load_breast_cancer}[name]
    bunch = loader()
    return bunch.data.astype(np.float64), bunch.target.astype(np.int64)


def make_task_data(spec: dict, secret: int) -> tuple[dict, dict]:
    """(train arrays for the sandbox, held-out arrays the evaluator keeps), from the secret seed."""
    rng = np.random.default_rng(secret)
    kind = spec["kind"]
    if kind == "mlp":
        X, y = load_dataset(spec["dataset"])  # cached: never modified below
        n_classes = int(y.max()) + 1
        order = rng.permutation(len(X))
        n_test = int(round(len(X) * spec.get("test_fraction", 0.3)))
        test, train = order[:n_test], order[n_test:]
        mean, std = X[train].mean(0), X[train].std(0)
        std[std < 1e-6] = 1.0  # constant features (digits' borders) stay as they are
        rotation, _ = np.linalg.qr(rng.standard_normal((X.shape[1], X.shape[1])))
        relabel = rng.permutation(n_classes)
        Z = ((X - mean) / std) @ rotation
        f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
        return ({"x": f32(Z[train]), "y": relabel[y[train]]},
                {"x": f32(Z[test]), "y": relabel[y[test]]})
    if kind == "quadratic":
        d = spec["dim"]
        eig = np.logspace(-math.log10(spec["cond"]), 0.0, d)
        rot = np.linalg.qr(rng.standard_normal((d, d)))[0] if spec.get("rotate") else np.eye(d)
        arrays = {"eig": eig.astype(np.float32), "rot": rot.astype(np.float32)}
        return arrays, arrays
    if kind == "rosenbrock":
        return {}, {}
    raise ValueError(f"unknown task kind {kind!r}")


# --------------------------------------------------------------------------- parameters
def _gen(seed: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + salt) % (2**63))


def layer_sizes(spec: dict) -> list[int]:
    return [int(spec["features"]), *[int(h) for h in spec["hidden"]], int(spec["classes"])]


def optimum(spec: dict, seeds) -> torch.Tensor:
    """x* per seed for quadratic / rosenbrock: (S, dim)."""
    return torch.stack([torch.randn(spec["dim"], generator=_gen(s, 1)) for s in seeds])


def init_params(spec: dict, arrays: dict, seeds) -> dict[str, torch.Tensor]:
    kind = spec["kind"]
    if kind == "mlp":
        sizes = layer_sizes(spec)
        out = {}
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            bound = 1.0 / math.sqrt(fan_in)
            ws, bs = [], []
            for s in seeds:
                g = _gen(s, 10 + i)
                ws.append((torch.rand(fan_in, fan_out, generator=g) * 2 - 1) * bound)
                bs.append((torch.rand(1, fan_out, generator=g) * 2 - 1) * bound)
            out[f"w{i}"], out[f"b{i}"] = torch.stack(ws), torch.stack(bs)
        return out
    x_star = optimum(spec, seeds)
    jitter = torch.stack([torch.randn(spec["dim"], generator=_gen(s, 2)) for s in seeds])
    if kind == "quadratic":
        return {"x": x_star + jitter}
    start = torch.tensor([-1.2 if i % 2 == 0 else 1.0 for i in range(spec["dim"])])
    return {"x": x_star - 1.0 + start + 0.1 * jitter}


def param_shapes(spec: dict) -> dict[str, tuple[int, ...]]:
    """Shapes of one seed's parameters."""
    if spec["kind"] != "mlp":
        return {"x": (spec["dim"],)}
    sizes = layer_sizes(spec)
    shapes = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"w{i}"], shapes[f"b{i}"] = (a, b), (1, b)
    return shapes


# --------------------------------------------------------------------------- losses
def mlp_logits(params: dict, x: torch.Tensor) -> torch.Tensor:
    """(S, B, features) -> (S, B, classes)."""
    n = len(params) // 2
    h = x
    for i in range(n):
        h = torch.baddbmm(params[f"b{i}"], h, params[f"w{i}"])
        if i < n - 1:
            h = torch.relu(h)
    return h


def mlp_loss(params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per seed: (S,)."""
    logp = torch.log_softmax(mlp_logits(params, x), -1)
    return -logp.gather(-1, y[..., None]).squeeze(-1).mean(-1)


def quadratic_loss(x: torch.Tensor, x_star: torch.Tensor, eig: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    z = (x - x_star) @ rot.T
    return 0.5 * (eig * z * z).sum(-1)


def rosenbrock_loss(x: torch.Tensor, x_star: torch.Tensor) -> torch.Tensor:
    y = x - x_star + 1.0
    return (100.0 * (y[:, 1:] - y[:, :-1] ** 2) ** 2 + (1.0 - y[:, :-1]) ** 2).sum(-1)


def rosenbrock_grad(x: torch.Tensor, x_star: torch.Tensor) -> torch.Tensor:
    """Analytic gradient of :func:`rosenbrock_loss` (cheaper than autograd)."""
    y = x - x_star + 1.0
    g = torch.zeros_like(y)
    inner = y[:, 1:] - y[:, :-1] ** 2
    g[:, :-1] = -400.0 * y[:, :-1] * inner - 2.0 * (1.0 - y[:, :-1])
    g[:, 1:] += 200.0 * inner
    return g


def heldout_loss(spec: dict, held: dict, params: dict, seeds) -> torch.Tensor:
    """The loss the score uses, per seed: held-out cross-entropy, or the noise-free objective."""
    with torch.no_grad():
        kind = spec["kind"]
        if kind == "mlp":
            S = len(seeds)
            x = torch.as_tensor(held["x"]).expand(S, *held["x"].shape)
            y = torch.as_tensor(held["y"]).expand(S, len(held["y"]))
            return mlp_loss(params, x, y)
        x_star = optimum(spec, seeds)
        if kind == "quadratic":
            return quadratic_loss(params["x"], x_star, torch.as_tensor(held["eig"]), torch.as_tensor(held["rot"]))
        return rosenbrock_loss(params["x"], x_star)
