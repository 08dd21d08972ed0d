"""Experience replay with a reservoir buffer (Chaudhry et al. 2019; Mammoth's ``er``).

The harness builds a fixed MLP (64-100-100-10) and, for each of 5 tasks, calls
``before_task(t)``, then ``observe(x, y, t)`` for a fixed number of iterations (one mini-batch each),
then ``after_task(t)``. Every few iterations it calls ``predict(x, task_id)`` on test inputs and
scores the argmax outside the sandbox. ``task_id`` is None at test time in class- and
domain-incremental streams (``budget.scenario`` is "class_il" or "domain_il") and the task's index
in task-incremental ones, where logits are masked to the task's classes.

``budget`` fields: buffer_size (examples you may keep), batch_size, iterations (per task),
passes (rows the model may process per task: passes x iterations x batch_size), param_copies
(parameter-shaped tensors you may keep, in model sizes), lr (a sensible SGD rate), num_tasks,
num_classes, input_dim, scenario, task_id_at_test, device, seed.
The harness measures what you hold after each task; exceeding a budget makes the candidate invalid.
"""
import torch
import torch.nn.functional as F


class Strategy:
    def __init__(self, model, num_classes, budget):
        self.model = model
        self.opt = torch.optim.SGD(model.parameters(), lr=budget.lr)
        self.size = budget.buffer_size
        self.device = budget.device
        self.buf_x = torch.zeros(self.size, budget.input_dim, device=self.device)
        self.buf_y = torch.zeros(self.size, dtype=torch.long, device=self.device)
        self.filled = 0
        self.seen = 0
        self.gen = torch.Generator().manual_seed(budget.seed)

    def before_task(self, task_id):
        pass

    def observe(self, x, y, task_id):
        self.model.train()
        inputs, labels = x, y
        if self.filled > 0:
            idx = torch.randint(self.filled, (len(y),), generator=self.gen).to(self.device)
            inputs = torch.cat([x, self.buf_x[idx]])
            labels = torch.cat([y, self.buf_y[idx]])
        loss = F.cross_entropy(self.model(inputs), labels)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self._reservoir(x, y)

    def _reservoir(self, x, y):
        for i in range(len(y)):
            if self.filled < self.size:
                slot = self.filled
                self.filled += 1
            else:
                slot = int(torch.randint(self.seen + 1, (1,), generator=self.gen))
            if slot < self.size:
                self.buf_x[slot] = x[i]
                self.buf_y[slot] = y[i]
            self.seen += 1

    def after_task(self, task_id):
        pass

    def predict(self, x, task_id):
        self.model.eval()
        return self.model(x)
