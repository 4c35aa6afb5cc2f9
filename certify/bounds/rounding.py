"""Directed float32 neighbours shared by the bound engine's Python modules (the twin of
csrc/bounds/rounding.h): a bound rounded outward stays a bound."""

from __future__ import annotations

import torch


def down(t: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(t, torch.full_like(t, -float("inf")))


def up(t: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(t, torch.full_like(t, float("inf")))


def to_f32_down(t64: torch.Tensor) -> torch.Tensor:
    return down(t64.float())


def to_f32_up(t64: torch.Tensor) -> torch.Tensor:
    return up(t64.float())
