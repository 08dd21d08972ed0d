"""Naive fine-tuning: plain SGD on each new batch, nothing kept (the lower bound).

Same signature as the seed (see evaluators/continual/seed/strategy.py).
"""
import torch
import torch.nn.functional as F


class Strategy:
    def __init__(self, model, num_classes, budget):
        self.model = model
        self.opt = torch.optim.SGD(model.parameters(), lr=budget.lr)

    def before_task(self, task_id):
        pass

    def observe(self, x, y, task_id):
        self.model.train()
        loss = F.cross_entropy(self.model(x), y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def after_task(self, task_id):
        pass

    def predict(self, x, task_id):
        self.model.eval()
        return self.model(x)
