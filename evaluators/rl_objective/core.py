"""Batched torch environments and the fixed policy network, shared by the harness and the evaluator.

Everything here is batched over ``S`` independent training seeds and ``N`` environments per seed:
observations are ``(S, N, obs_dim)``, actions ``(S, N)``. The harness imports a copy of this file
(``_dgm_core.py`` in the candidate's work directory) to train; the evaluator imports the package's
own copy to roll out the saved policy, so a candidate that edits its copy only changes its training.

Environments (all discrete-action, reward per step, auto-reset on ``done``):

* ``cartpole``: classic CartPole-v1 dynamics (Euler, tau 0.02, |x| > 2.4 or |theta| > 12 degrees
  ends an episode, +1 per step, truncated at ``max_steps``); physical constants are parameters.
* ``bandit``: ``K`` Bernoulli arms with means ``p``; every step is a one-step episode; the
  observation is the constant ``[1.0]``.
* ``grid``: an ``n x n`` maze, start at (0, 0), goal at ``goal``, walls; one-hot position
  observation; -0.01 per step, +1 on reaching the goal; truncated at ``max_steps``.
"""
from __future__ import annotations

import math
from collections import deque

import torch

HIDDEN = 64


# ---------------------------------------------------------------------------------- environments
class CartPole:
    obs_dim = 4
    n_actions = 2

    def __init__(self, S: int, N: int, gen: torch.Generator, device="cpu", gravity=9.8, masscart=1.0,
                 masspole=0.1, length=0.5, force_mag=10.0, max_steps=500, **_):
        self.S, self.N, self.gen, self.device = S, N, gen, device
        self.gravity, self.masscart, self.masspole, self.length = gravity, masscart, masspole, length
        self.force_mag, self.max_steps, self.tau = force_mag, int(max_steps), 0.02
        self.total_mass = masscart + masspole
        self.polemass_length = masspole * length
        self.theta_limit = 12 * 2 * math.pi / 360
        self.x_limit = 2.4
        self.state = torch.zeros(S, N, 4, device=device)
        self.t = torch.zeros(S, N, device=device)

    def _rand_state(self, shape):
        u = torch.rand(*shape, 4, generator=self.gen, device=self.device)
        return u * 0.1 - 0.05

    def reset(self) -> torch.Tensor:
        self.state = self._rand_state((self.S, self.N))
        self.t.zero_()
        return self.state.clone()

    def step(self, action: torch.Tensor):
        x, x_dot, theta, theta_dot = self.state.unbind(-1)
        force = (action.to(self.state.dtype) * 2 - 1) * self.force_mag
        cos, sin = torch.cos(theta), torch.sin(theta)
        temp = (force + self.polemass_length * theta_dot**2 * sin) / self.total_mass
        theta_acc = (self.gravity * sin - cos * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * cos**2 / self.total_mass)
        )
        x_acc = temp - self.polemass_length * theta_acc * cos / self.total_mass
        x = x + self.tau * x_dot
        x_dot = x_dot + self.tau * x_acc
        theta = theta + self.tau * theta_dot
        theta_dot = theta_dot + self.tau * theta_acc
        self.state = torch.stack([x, x_dot, theta, theta_dot], -1)
        self.t += 1
        failed = (x.abs() > self.x_limit) | (theta.abs() > self.theta_limit)
        done = failed | (self.t >= self.max_steps)
        reward = torch.ones_like(x)
        if done.any():
            fresh = self._rand_state((self.S, self.N))
            self.state = torch.where(done[..., None], fresh, self.state)
            self.t = torch.where(done, torch.zeros_like(self.t), self.t)
        return self.state.clone(), reward, done


class Bandit:
    n_actions: int
    obs_dim = 1

    def __init__(self, S: int, N: int, gen: torch.Generator, device="cpu", means=(0.2, 0.8), **_):
        self.S, self.N, self.gen, self.device = S, N, gen, device
        self.means = torch.tensor(means, dtype=torch.float32, device=device)
        self.n_actions = len(means)
        self.obs = torch.ones(S, N, 1, device=device)

    def reset(self) -> torch.Tensor:
        return self.obs.clone()

    def step(self, action: torch.Tensor):
        p = self.means[action]
        reward = (torch.rand(p.shape, generator=self.gen, device=self.device) < p).float()
        return self.obs.clone(), reward, torch.ones_like(reward, dtype=torch.bool)


# grid actions: up, down, left, right as (row, col) moves
_MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))


class Grid:
    n_actions = 4

    def __init__(self, S: int, N: int, gen: torch.Generator, device="cpu", n=5, walls=(), goal=None,
                 max_steps=None, **_):
        self.S, self.N, self.gen, self.device, self.n = S, N, gen, device, int(n)
        self.obs_dim = self.n * self.n
        goal = tuple(goal) if goal is not None else (self.n - 1, self.n - 1)
        self.goal = goal[0] * self.n + goal[1]
        self.max_steps = int(max_steps or 4 * self.n * self.n)
        # next_cell[c, a]: the cell reached from c by action a (walls and borders block)
        wall_set = {int(r) * self.n + int(c) for r, c in walls}
        table = torch.zeros(self.obs_dim, 4, dtype=torch.long)
        for cell in range(self.obs_dim):
            r, c = divmod(cell, self.n)
            for a, (dr, dc) in enumerate(_MOVES):
                rr, cc = r + dr, c + dc
                ok = 0 <= rr < self.n and 0 <= cc < self.n and rr * self.n + cc not in wall_set
                table[cell, a] = rr * self.n + cc if ok else cell
        self.next_cell = table.to(device)
        self.pos = torch.zeros(S, N, dtype=torch.long, device=device)
        self.t = torch.zeros(S, N, device=device)
        self.eye = torch.eye(self.obs_dim, device=device)

    def reset(self) -> torch.Tensor:
        self.pos.zero_()
        self.t.zero_()
        return self.eye[self.pos]

    def step(self, action: torch.Tensor):
        self.pos = self.next_cell[self.pos, action]
        self.t += 1
        reached = self.pos == self.goal
        reward = reached.float() - 0.01
        done = reached | (self.t >= self.max_steps)
        self.pos = torch.where(done, torch.zeros_like(self.pos), self.pos)
        self.t = torch.where(done, torch.zeros_like(self.t), self.t)
        return self.eye[self.pos], reward, done


ENVS = {"cartpole": CartPole, "bandit": Bandit, "grid": Grid}


def make_env(spec: dict, S: int, N: int, gen: torch.Generator, device="cpu"):
    """``spec`` = {"kind": "cartpole" | "bandit" | "grid", **parameters}."""
    return ENVS[spec["kind"]](S, N, gen, device, **{k: v for k, v in spec.items() if k != "kind"})


def grid_shortest_path(n: int, walls, goal=None) -> int | None:
    """Number of moves from (0, 0) to the goal, or None when walls cut it off (BFS)."""
    goal = tuple(goal) if goal is not None else (n - 1, n - 1)
    blocked = {tuple(w) for w in walls}
    seen, queue = {(0, 0): 0}, deque([(0, 0)])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            return seen[cell]
        for dr, dc in _MOVES:
            nxt = (cell[0] + dr, cell[1] + dc)
            if 0 <= nxt[0] < n and 0 <= nxt[1] < n and nxt not in blocked and nxt not in seen:
                seen[nxt] = seen[cell] + 1
                queue.append(nxt)
    return None


# ---------------------------------------------------------------------------------- policy network
def param_shapes(obs_dim: int, n_actions: int) -> dict[str, tuple[int, ...]]:
    """Shapes of one seed's parameters: separate actor (pi) and critic (v) MLPs, obs-64-64-out, tanh."""
    shapes = {}
    for head, out in (("pi", n_actions), ("v", 1)):
        dims = (obs_dim, HIDDEN, HIDDEN, out)
        for i in range(3):
            shapes[f"{head}.w{i}"] = (dims[i], dims[i + 1])
            shapes[f"{head}.b{i}"] = (1, dims[i + 1])
    return shapes


def init_params(obs_dim: int, n_actions: int, seeds, device="cpu") -> dict[str, torch.Tensor]:
    """Orthogonal init (gain sqrt 2; 0.01 for the policy head, 1 for the value head), one per seed."""
    shapes = param_shapes(obs_dim, n_actions)
    params = {k: torch.zeros(len(seeds), *s) for k, s in shapes.items()}
    for j, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(int(seed))
        for head in ("pi", "v"):
            for i in range(3):
                gain = math.sqrt(2) if i < 2 else (0.01 if head == "pi" else 1.0)
                w = torch.empty(shapes[f"{head}.w{i}"][::-1])
                torch.nn.init.orthogonal_(w, gain=gain, generator=g)
                params[f"{head}.w{i}"][j] = w.T
    return {k: v.to(device) for k, v in params.items()}


def _mlp(params, head: str, x: torch.Tensor) -> torch.Tensor:
    h = torch.tanh(torch.baddbmm(params[f"{head}.b0"], x, params[f"{head}.w0"]))
    h = torch.tanh(torch.baddbmm(params[f"{head}.b1"], h, params[f"{head}.w1"]))
    return torch.baddbmm(params[f"{head}.b2"], h, params[f"{head}.w2"])


def logits(params, obs: torch.Tensor) -> torch.Tensor:
    """(S, B, obs_dim) -> (S, B, n_actions)."""
    return _mlp(params, "pi", obs)


def value(params, obs: torch.Tensor) -> torch.Tensor:
    """(S, B, obs_dim) -> (S, B)."""
    return _mlp(params, "v", obs).squeeze(-1)


def sample(logit: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Categorical sample by the Gumbel-max trick (reproducible with ``gen``)."""
    u = torch.rand(logit.shape, generator=gen, device=logit.device).clamp_(1e-12, 1.0)
    return torch.argmax(logit - torch.log(-torch.log(u)), dim=-1)


# ---------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def episode_returns(spec: dict, params, episodes: int, seed: int, device="cpu", policy: str = "sample") -> torch.Tensor:
    """Undiscounted return of the first ``episodes`` episodes per seed: ``(S, episodes)``.

    ``policy`` is ``"sample"`` (the stochastic policy) or ``"random"`` (uniform actions; ``params``
    then only gives S). Bandit returns are exact expectations, not samples.
    """
    S = next(iter(params.values())).shape[0]
    if spec["kind"] == "bandit":
        means = torch.tensor(spec["means"], dtype=torch.float32, device=device)
        if policy == "random":
            expected = means.mean().expand(S)
        else:
            probs = torch.softmax(logits(params, torch.ones(S, 1, 1, device=device)), -1)[:, 0]
            expected = probs @ means
        return expected[:, None].expand(S, episodes).clone()
    gen = torch.Generator(device=device).manual_seed(int(seed))
    env = make_env(spec, S, episodes, gen, device)
    obs = env.reset()
    total = torch.zeros(S, episodes, device=device)
    finished = torch.zeros(S, episodes, dtype=torch.bool, device=device)
    for _ in range(env.max_steps):
        if policy == "random":
            action = torch.randint(env.n_actions, (S, episodes), generator=gen, device=device)
        else:
            action = sample(logits(params, obs), gen)
        obs, reward, done = env.step(action)
        total += reward * (~finished)
        finished |= done
        if finished.all():
            break
    return total
