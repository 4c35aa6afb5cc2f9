"""Small random networks covering every supported layer, for the bound tests."""

import torch
from torch import nn


class Normalized(nn.Module):
    """Input normalisation by constants, then an MLP."""

    def __init__(self, dim=6):
        super().__init__()
        self.register_buffer("mean", torch.linspace(-0.2, 0.3, dim))
        self.register_buffer("std", torch.linspace(0.3, 0.9, dim))
        self.net = nn.Sequential(nn.Linear(dim, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 4))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.head = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.block(h))
        return self.head(h.view(h.size(0), -1))


def mlp():
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 4))


def cnn():
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=1, padding=1), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=3), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 3 * 3, 5),
    )


def batchnorm_pool():
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2), nn.Identity(),
        nn.Flatten(), nn.Linear(4 * 3 * 3, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.Linear(10, 3),
    )
    with torch.no_grad():  # non-trivial running statistics
        for bn in (model[1], model[7]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
    return model


# name -> (builder, input shape)
MODELS = {
    "mlp": (mlp, (6,)),
    "normalized": (Normalized, (6,)),
    "cnn": (cnn, (2, 6, 6)),
    "batchnorm_pool": (batchnorm_pool, (2, 6, 6)),
    "residual": (Residual, (2, 6, 6)),
}


def build(name, seed=0):
    torch.manual_seed(seed)
    builder, shape = MODELS[name]
    return builder().eval(), shape
