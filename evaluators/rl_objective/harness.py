"""Runs inside the sandbox (started by ``_dgm_runtime.py``): a fixed PPO-style trainer whose policy
loss is the candidate's objective.

For every run in the config it trains a fresh actor-critic on one environment for a budget of
environment steps (per seed, all seeds batched), then saves the final weights as
``ckpt_<run id>.npz`` (float32 arrays, leading axis = seed). Nothing else leaves the sandbox: the
evaluator rolls the saved policies out itself. A non-finite loss or weight stops with exit code 3
and a line starting ``diverged:``.
"""
import sys
import time


def fail(message: str, code: int = 3) -> None:
    print(message, file=sys.stderr, flush=True)
    sys.exit(code)


def train(run: dict, objective, core, torch, device: str) -> dict:
    """PPO with GAE, minibatches, Adam, per-seed grad clipping; the policy loss is ``objective``."""
    seeds, hp = run["seeds"], run["hp"]
    S, N, T = len(seeds), hp["num_envs"], hp["num_steps"]
    gen = torch.Generator(device=device).manual_seed(int(run["env_seed"]))
    env = core.make_env(run["env"], S, N, gen, device)
    params = core.init_params(env.obs_dim, env.n_actions, seeds, device)
    for p in params.values():
        p.requires_grad_(True)
    # Adam (beta 0.9/0.999, eps 1e-5), written out: torch.optim costs seconds of import (dynamo)
    adam_m = {k: torch.zeros_like(p) for k, p in params.items()}
    adam_v = {k: torch.zeros_like(p) for k, p in params.items()}
    adam_t = 0
    iterations = max(1, run["budget"] // (N * T))
    batch = N * T
    mb = batch // hp["minibatches"]
    obs = env.reset()
    buf_obs = torch.zeros(T, S, N, env.obs_dim, device=device)
    buf_act = torch.zeros(T, S, N, dtype=torch.long, device=device)
    buf_logp, buf_val, buf_rew, buf_done = (torch.zeros(T, S, N, device=device) for _ in range(4))
    for it in range(iterations):
        frac = it / iterations  # lifetime fraction at the start of this update
        lr = hp["lr"] * (1.0 - frac) if hp.get("anneal_lr", True) else hp["lr"]
        with torch.no_grad():
            for t in range(T):
                logit = core.logits(params, obs)
                action = core.sample(logit, gen)
                buf_obs[t], buf_act[t] = obs, action
                buf_logp[t] = torch.log_softmax(logit, -1).gather(-1, action[..., None])[..., 0]
                buf_val[t] = core.value(params, obs)
                obs, reward, done = env.step(action)
                buf_rew[t], buf_done[t] = reward, done.float()
            next_val = core.value(params, obs)
            adv = torch.zeros_like(buf_rew)
            last = torch.zeros(S, N, device=device)
            for t in reversed(range(T)):
                nv = next_val if t == T - 1 else buf_val[t + 1]
                live = 1.0 - buf_done[t]
                delta = buf_rew[t] + hp["gamma"] * nv * live - buf_val[t]
                last = delta + hp["gamma"] * hp["lam"] * live * last
                adv[t] = last
            ret = adv + buf_val
        # (T, S, N, ...) -> (S, T*N, ...)
        f_obs = buf_obs.transpose(0, 1).reshape(S, batch, env.obs_dim)
        f_act, f_logp, f_adv, f_ret = (x.transpose(0, 1).reshape(S, batch) for x in (buf_act, buf_logp, adv, ret))
        for _epoch in range(hp["epochs"]):
            perm = torch.argsort(torch.rand(S, batch, generator=gen, device=device), dim=1)
            for start in range(0, batch - mb + 1, mb):
                idx = perm[:, start:start + mb]
                o = torch.gather(f_obs, 1, idx[..., None].expand(S, mb, env.obs_dim))
                a, old_logp, a_adv, a_ret = (torch.gather(x, 1, idx) for x in (f_act, f_logp, f_adv, f_ret))
                a_adv = (a_adv - a_adv.mean(1, keepdim=True)) / (a_adv.std(1, keepdim=True) + 1e-8)
                logp_all = torch.log_softmax(core.logits(params, o), -1)
                new_logp = logp_all.gather(-1, a[..., None])[..., 0]
                entropy = -(logp_all.exp() * logp_all).sum(-1)
                log_ratio = new_logp - old_logp
                ratio = log_ratio.exp()
                lifetime = torch.full_like(ratio, frac)
                pg = objective(ratio, a_adv, log_ratio, entropy, lifetime)
                if not isinstance(pg, torch.Tensor) or pg.shape != ratio.shape:
                    shape = tuple(pg.shape) if isinstance(pg, torch.Tensor) else type(pg).__name__
                    fail(f"objective returned {shape}, expected a tensor of shape {tuple(ratio.shape)} (one loss per sample)", 4)
                v_loss = 0.5 * (core.value(params, o) - a_ret) ** 2
                loss = (pg.mean(1) + hp["vf_coef"] * v_loss.mean(1)).sum()
                if not torch.isfinite(loss):
                    fail(f"diverged: the loss became non-finite at update {it + 1}/{iterations} (lifetime fraction {frac:.2f})")
                grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
                grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params.values(), grads)]
                with torch.no_grad():  # clip each seed's gradient norm separately, then Adam
                    sq = sum(g.pow(2).flatten(1).sum(1) for g in grads)
                    scale = (hp["max_grad_norm"] / (sq.sqrt() + 1e-6)).clamp(max=1.0)
                    if not torch.isfinite(scale).all():
                        fail(f"diverged: non-finite gradient at update {it + 1}/{iterations}")
                    adam_t += 1
                    c1, c2 = 1 - 0.9**adam_t, 1 - 0.999**adam_t
                    for (k, p), g in zip(params.items(), grads):
                        g = g * scale.view(S, *([1] * (p.dim() - 1)))
                        adam_m[k].mul_(0.9).add_(g, alpha=0.1)
                        adam_v[k].mul_(0.999).addcmul_(g, g, value=0.001)
                        p.sub_(lr / c1 * adam_m[k] / ((adam_v[k] / c2).sqrt() + 1e-5))
    with torch.no_grad():
        bad = [k for k, p in params.items() if not torch.isfinite(p).all()]
        if bad:
            fail(f"diverged: non-finite policy weights ({', '.join(bad)}) after training")
    return {k: p.detach().cpu().numpy().astype("float32") for k, p in params.items()}


def main(config: dict) -> int:
    import numpy as np

    import _dgm_core as core
    from _dgm_runtime import import_entry, setup_torch

    torch, device = setup_torch(config)
    entry = config["entry"]
    module = import_entry(entry)
    objective = getattr(module, "objective", None)
    if not callable(objective):
        fail(f"{entry} defines no function objective(ratio, advantage, log_ratio, entropy, lifetime_fraction)", 4)
    t0 = time.perf_counter()
    for run in config["runs"]:
        weights = train(run, objective, core, torch, device)
        np.savez(f"ckpt_{run['id']}.npz", **weights)
    print(f"trained {len(config['runs'])} run(s) in {time.perf_counter() - t0:.2f} s on {device}", file=sys.stderr)
    return 0
