"""Small random networks covering every supported layer, for the bound tests: MODELS (the layers
of the first round) and ZOO (the operators of issue 15: smooth activations, pooling, the
piecewise-linear activations written with ReLUs, and the operations that move values)."""

import torch
import torch.nn.functional as F
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


def lenet_tanh():
    """LeNet-5's shape in small: tanh and average pooling."""
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(3, 4, 2), nn.Tanh(),
                         nn.Flatten(), nn.Linear(4 * 2 * 2, 8), nn.Tanh(), nn.Linear(8, 3))


def vgg_maxpool():
    """VGG's shape in small: convolutions, ReLU and max-pooling (one with padding = -inf and stride < kernel)."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
                         nn.Flatten(), nn.Linear(4 * 2 * 2, 3))


class ResNetGap(nn.Module):
    """A residual block and global average pooling (x.mean over the map), as ResNets end."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.block(h))
        return self.head(h.mean((2, 3)))


def mlp_smooth():
    """Every smooth activation in one MLP (a control policy's sigmoid / tanh among them)."""
    return nn.Sequential(nn.Linear(6, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.SiLU(),
                         nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 8), nn.ELU(0.7), nn.Linear(8, 8),
                         nn.Softplus(beta=2.0), nn.Linear(8, 3))


def mobilenet_relu6():
    """A MobileNet block: pointwise, ReLU6, depthwise, hard sigmoid; LeakyReLU and global pooling."""
    return nn.Sequential(nn.Conv2d(2, 6, 1), nn.ReLU6(), nn.Conv2d(6, 6, 3, padding=1, groups=6),
                         nn.Hardtanh(-0.5, 2.0), nn.Conv2d(6, 4, 1), nn.Hardsigmoid(), nn.Conv2d(4, 4, 3),
                         nn.LeakyReLU(0.1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


class Moves(nn.Module):
    """Slicing, padding (constant and reflect), concatenation, split, flip, max / min of two
    values, a clamp by a tensor, a transposed convolution and nearest upsampling."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, padding=1)
        self.b = nn.Conv2d(2, 3, 3, padding=1)
        self.up = nn.ConvTranspose2d(7, 4, 3, stride=2, padding=1, output_padding=1, groups=1)
        self.head = nn.Linear(4 * 6 * 4 + 2 * 3 * 2, 4)
        self.register_buffer("ceiling", torch.linspace(0.2, 1.0, 4).view(1, 1, 1, 4))

    def forward(self, x):
        a, b = torch.sigmoid(self.a(x)), F.leaky_relu(self.b(x), 0.2)
        y = torch.cat([a[:, :, :3], F.pad(b, (0, 0, 1, 0), value=0.5)[:, :, 1:4]], 1)  # (7, 3, 4)
        y = torch.maximum(y, y.flip(-1)) - 0.5 * torch.minimum(y, F.pad(y, (1, 1, 0, 0), mode="reflect")[..., 1:5])
        first, rest = torch.split(y, [2, 5], dim=1)
        y = torch.cat([rest, first], 1).clamp(max=self.ceiling)
        z = self.up(y)  # (4, 6, 8)
        z = F.interpolate(z[:, :, :3, ::2], scale_factor=2, mode="nearest")  # (4, 6, 8)
        return self.head(torch.cat([z[..., :4].flatten(1), F.max_pool2d(x, 2).flatten(1)], 1))


ZOO = {
    "lenet_tanh": (lenet_tanh, (1, 8, 8)),
    "vgg_maxpool": (vgg_maxpool, (1, 8, 8)),
    "resnet_gap": (ResNetGap, (2, 6, 6)),
    "mlp_smooth": (mlp_smooth, (6,)),
    "mobilenet_relu6": (mobilenet_relu6, (2, 6, 6)),
    "moves": (Moves, (2, 6, 4)),
}


def build(name, seed=0):
    torch.manual_seed(seed)
    builder, shape = MODELS[name] if name in MODELS else ZOO[name]
    return builder().eval(), shape
