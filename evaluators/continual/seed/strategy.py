"""Experience replay with a reservoir buffer (Chaudhry et al. 2019; Mammoth's ``er``): every
mini-batch is trained together with as many rows drawn from a buffer filled by reservoir sampling.
The harness's contract (the methods, ``budget``, the streams) is in the task."""
import torch
import torch.nn.functional as F

LR_SCALE = 1.0  # the SGD rate, as a multiple of budget.lr
REPLAY_RATIO = 1.0  # rows replayed from the buffer per new row of a mini-batch


class Strategy:
    def __init__(self, model, num_classes, budget):
        self.model = model
        self.opt = torch.optim.SGD(model.parameters(), lr=budget.lr * LR_SCALE)
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
            idx = torch.randint(self.filled, (max(1, round(REPLAY_RATIO * len(y))),), generator=self.gen).to(self.device)
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
