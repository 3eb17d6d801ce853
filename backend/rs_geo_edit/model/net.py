"""The SinDDM denoiser: fully convolutional, no down-sampling, attention or normalisation.

Four blocks of widths in -> w/2 -> w -> w -> w/2, then a 1x1 convolution to the band count,
predicting the noise. Each block: 5x5 depthwise convolution, plus the projected conditioning
vector, then 3x3 conv -> GELU -> 3x3 conv, plus a residual (1x1 conv when widths differ).
Timestep and scale each get a 32-d sinusoidal embedding; concatenated they pass through
Linear(64, 128) -> GELU -> Linear(128, 32) and feed every block. With width 160 this is ~1.1 M
parameters with a receptive field of 33 px (each block reaches 4 px further).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

COND_DIM = 32


def sinusoidal_embedding(values: torch.Tensor, dim: int = 32) -> torch.Tensor:
    """(batch,) -> (batch, dim): sines and cosines of geometrically spaced frequencies."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=values.device, dtype=torch.float32)
                      * (-math.log(10000.0) / (half - 1)))
    angles = values.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class Block(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.cond = nn.Sequential(nn.GELU(), nn.Linear(COND_DIM, COND_DIM), nn.Linear(COND_DIM, dim_in))
        self.depthwise = nn.Conv2d(dim_in, dim_in, 5, padding=2, groups=dim_in)
        self.body = nn.Sequential(nn.Conv2d(dim_in, dim_out, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(dim_out, dim_out, 3, padding=1))
        self.residual = nn.Conv2d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift = self.cond(cond)
        if shift.shape[0] == 1:
            # one conditioning vector (sampling): it is a bias of the depthwise convolution, which
            # spares a pass over the activations (element-wise passes are a quarter of a CPU step)
            dw = self.depthwise
            h = F.conv2d(x, dw.weight, dw.bias + shift[0], dw.stride, dw.padding, dw.dilation, dw.groups)
        else:
            h = self.depthwise(x) + shift[:, :, None, None]
        return self.body(h).add_(self.residual(x))


class SinDDMNet(nn.Module):
    """Noise predictor eps(x_t, t, s) for images of ``bands`` channels."""

    def __init__(self, bands: int, width: int = 160):
        super().__init__()
        half = width // 2
        self.bands, self.width = bands, width
        self.cond_mlp = nn.Sequential(nn.Linear(2 * COND_DIM, 4 * COND_DIM), nn.GELU(),
                                      nn.Linear(4 * COND_DIM, COND_DIM))
        self.blocks = nn.ModuleList([Block(bands, half), Block(half, width), Block(width, width),
                                     Block(width, half)])
        self.out = nn.Conv2d(half, bands, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        cond = self.cond_mlp(torch.cat([sinusoidal_embedding(t, COND_DIM), sinusoidal_embedding(s, COND_DIM)], 1))
        for block in self.blocks:
            x = block(x, cond)
        return self.out(x)


def precision(device: torch.device) -> tuple[bool, torch.dtype]:
    """(autocast enabled, dtype) of the denoiser on ``device``: mixed precision on CUDA
    (bfloat16 where supported, else float16), full precision on the CPU."""
    amp = device.type == "cuda"
    return amp, torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16



def receptive_radius(net: nn.Module) -> int:
    """How far, in pixels, an output pixel sees on each side: the sum of every convolution's
    reach. Exact for SinDDMNet, whose convolutions are chained (a residual's 1x1 adds nothing);
    an upper bound for any net made of convolutions alone. Tiled sampling keeps this many pixels
    of each tile's cut edges out of the fused prediction."""
    reach = 0
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            k, d = module.kernel_size, module.dilation
            reach += max((k[0] - 1) // 2 * d[0], (k[1] - 1) // 2 * d[1])
    return reach


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
