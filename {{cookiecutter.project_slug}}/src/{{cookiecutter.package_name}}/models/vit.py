"""A small ViT-style patch transformer (in the spirit of ClimaX / FourCastNet's ViT backbone).

Patches of patch_size x patch_size cells become tokens; learned latitude and longitude position embeddings;
pre-norm transformer blocks with global attention (so longitude periodicity is free); a linear head turns each
token back into its patch, and a final longitude-periodic 3x3 convolution removes the seams between patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import PeriodicConv2d, crop_grid, maybe_checkpoint, pad_grid


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        nlat: int,
        nlon: int,
        width: int = 32,
        depth: int = 2,
        patch_size: int = 4,
    ):
        super().__init__()
        p = self.patch = patch_size
        dim = 4 * width
        heads = max(1, dim // 32)
        self.grid = (-(-nlat // p), -(-nlon // p))  # tokens in latitude, longitude (grid padded up to multiples)
        self.embed = nn.Conv2d(in_channels, dim, kernel_size=p, stride=p)
        self.pos_lat = nn.Parameter(torch.zeros(1, dim, self.grid[0], 1))
        self.pos_lon = nn.Parameter(torch.zeros(1, dim, 1, self.grid[1]))
        nn.init.trunc_normal_(self.pos_lat, std=0.02)
        nn.init.trunc_normal_(self.pos_lon, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.unpatch = nn.Linear(dim, p * p * width)
        self.smooth = PeriodicConv2d(width, out_channels)
        # Start as persistence (zero change).
        nn.init.zeros_(self.smooth.weight)
        nn.init.zeros_(self.smooth.bias)
        self.width = width
        self.checkpointing = False

    def fsdp_units(self) -> list[nn.Module]:
        return list(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_grid(x, self.patch, self.patch)
        b = x.shape[0]
        h, w = self.grid
        tokens = (self.embed(x) + self.pos_lat + self.pos_lon).flatten(2).transpose(1, 2)  # [B, h*w, dim]
        for block in self.blocks:
            tokens = maybe_checkpoint(block, tokens, self.checkpointing)
        p = self.patch
        y = self.unpatch(self.norm(tokens)).view(b, h, w, p, p, self.width)
        y = y.permute(0, 5, 1, 3, 2, 4).reshape(b, self.width, h * p, w * p)
        return crop_grid(self.smooth(F.gelu(y)), size, p)
