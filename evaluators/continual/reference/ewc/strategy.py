"""Online EWC (Kirkpatrick et al. 2017; Schwarz et al. 2018): a quadratic penalty anchors the
weights that mattered for earlier tasks. The diagonal empirical Fisher is accumulated from the
squared mini-batch gradients seen while training each task, so no data is kept.

Same signature as the seed (see evaluators/continual/seed/strategy.py).
"""
import torch
import torch.nn.functional as F

LAMBDA = 100.0  # penalty strength
GAMMA = 1.0  # decay of older importance (online EWC)


class Strategy:
    def __init__(self, model, num_classes, budget):
        self.model = model
        self.opt = torch.optim.SGD(model.parameters(), lr=budget.lr)
        self.params = dict(model.named_parameters())
        self.fisher = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.task_fisher = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.anchor = None
        self.batches = 0

    def before_task(self, task_id):
        for f in self.task_fisher.values():
            f.zero_()
        self.batches = 0

    def observe(self, x, y, task_id):
        self.model.train()
        self.opt.zero_grad()
        loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        with torch.no_grad():
            for n, p in self.params.items():
                self.task_fisher[n] += p.grad ** 2
        self.batches += 1
        if self.anchor is not None:
            penalty = sum((self.fisher[n] * (p - self.anchor[n]) ** 2).sum() for n, p in self.params.items())
            (LAMBDA / 2 * penalty).backward()
        self.opt.step()

    def after_task(self, task_id):
        with torch.no_grad():
            for n in self.fisher:
                self.fisher[n] = GAMMA * self.fisher[n] + self.task_fisher[n] / max(self.batches, 1)
            self.anchor = {n: p.detach().clone() for n, p in self.params.items()}

    def predict(self, x, task_id):
        self.model.eval()
        return self.model(x)
