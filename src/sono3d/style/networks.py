"""CycleGAN networks (Zhu et al. 2017): the ResNet generator and the 70x70 PatchGAN discriminator.

Generator (the paper's ``c7s1-k, d2k, d4k, R4k x n, u2k, uk, c7s1-1``): a 7x7 convolution with
reflection padding, two stride-2 downsampling convolutions, ``n`` residual blocks (reflection
padding, two 3x3 convolutions), two stride-2 transposed convolutions and a 7x7 output convolution
with ``tanh``; instance normalisation and ReLU throughout. Six blocks at 128 pixels, nine at 256.

Discriminator: MONAI's :class:`~monai.networks.nets.PatchDiscriminator` with three strided
layers, 4x4 kernels, instance normalisation and leaky ReLU (slope 0.2), which is pix2pix's
``C64-C128-C256-C512`` PatchGAN: each output pixel judges a 70x70 patch of the input.

Convolution-normalisation-activation units are MONAI's :class:`~monai.networks.blocks.Convolution`;
reflection padding (not in MONAI's units) is a plain ``nn.ReflectionPad2d`` in front of an unpadded
unit. Weights start from ``N(0, 0.02)`` as in the reference implementation.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResnetGenerator", "PatchGAN", "init_weights", "receptive_field"]


def _unit(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, act: bool = True,
          transposed: bool = False) -> nn.Module:
    from monai.networks.blocks import Convolution  # heavy import, loaded when a network is built

    return Convolution(2, cin, cout, strides=stride, kernel_size=kernel, padding=padding,
                       output_padding=1 if transposed else None, is_transposed=transposed,
                       norm="INSTANCE", act="RELU" if act else None, adn_ordering="NA", bias=True)


class _ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), _unit(ch, ch, 3),
                                  nn.ReflectionPad2d(1), _unit(ch, ch, 3, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """ResNet generator ``[B, C, H, W] -> [B, C, H, W]`` in ``[-1, 1]`` (``H``, ``W`` multiples of 4).

    Parameters
    ----------
    channels : int
        Image channels (1: grey echo).
    ngf : int
        Filters of the first layer (64 in the paper).
    n_blocks : int
        Residual blocks (6 for 128-pixel images, 9 for 256).
    """

    def __init__(self, channels: int = 1, ngf: int = 64, n_blocks: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), _unit(channels, ngf, 7)]
        ch = ngf
        for _ in range(2):
            layers.append(_unit(ch, ch * 2, 3, stride=2, padding=1))
            ch *= 2
        layers += [_ResBlock(ch) for _ in range(n_blocks)]
        for _ in range(2):
            layers.append(_unit(ch, ch // 2, 3, stride=2, padding=1, transposed=True))
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchGAN(nn.Module):
    """70x70 PatchGAN ``[B, C, H, W] -> [B, 1, H/8 - 2, W/8 - 2]`` of real/fake scores (LSGAN: no sigmoid)."""

    def __init__(self, channels: int = 1, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        from monai.networks.nets import PatchDiscriminator

        self.net = PatchDiscriminator(spatial_dims=2, channels=ndf, in_channels=channels, out_channels=1,
                                      num_layers_d=n_layers, kernel_size=4, norm="INSTANCE", bias=True,
                                      padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[-1]


def receptive_field(n_layers: int = 3) -> int:
    """Input pixels seen by one PatchGAN output pixel (70 for three layers)."""
    # layers from the output back: final 4x4 s1, the last hidden 4x4 s1, then n_layers 4x4 s2
    strides = [2] * n_layers + [1, 1]
    rf = 1
    for s in reversed(strides):
        rf = rf * s + (4 - s)
    return rf


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """``N(0, gain)`` convolution weights and zero biases (the reference CycleGAN initialisation)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
