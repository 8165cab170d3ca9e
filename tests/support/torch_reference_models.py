"""PyTorch reference trunks for the weight-import tests, written from the published architectures.

ResNet-50 (He et al., CVPR 2016) with torchvision's state-dict names and its "v1.5" stride on the
3x3 convolution; MobileNetV2 (Sandler et al., CVPR 2018, width 1.0) with torchvision's or the
classic state-dict names. Random weights (no download), randomised BatchNorm statistics so a
wrong mapping cannot hide, ``eval()`` mode. Only imported when torch is installed.
"""

from __future__ import annotations

import torch
from torch import nn

MOBILENET_V2_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int, downsample: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = (
            nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
            if downsample
            else None
        )

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50Trunk(nn.Module):
    """torchvision-named ResNet-50 without avgpool/fc; ``last_stride`` of layer4."""

    def __init__(self, last_stride: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        inplanes = 64
        for index, (planes, blocks, stride) in enumerate(
            ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, last_stride)), start=1
        ):
            layers = []
            for b in range(blocks):
                layers.append(Bottleneck(inplanes, planes, stride if b == 0 else 1, b == 0))
                inplanes = planes * 4
            setattr(self, f"layer{index}", nn.Sequential(*layers))

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, relu: bool = True):
    layers = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    return layers + [nn.ReLU6()] if relu else layers


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int, classic: bool):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        parts = [] if expand == 1 else [_conv_bn(cin, hidden, 1, 1)]
        parts.append(_conv_bn(hidden, hidden, 3, stride, groups=hidden))
        project = _conv_bn(hidden, cout, 1, 1, relu=False)
        if classic:  # one flat Sequential: conv, bn, relu6, conv, bn, relu6, conv, bn
            self.conv = nn.Sequential(*(m for p in parts for m in p), *project)
        else:  # torchvision: Conv2dNormActivation blocks, then the projection conv and BN
            self.conv = nn.Sequential(*(nn.Sequential(*p) for p in parts), *project)

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2Trunk(nn.Module):
    """``features`` of MobileNetV2 (width 1.0); ``last_stride`` of features[14]."""

    def __init__(self, classic: bool = False, last_stride: int = 2):
        super().__init__()
        layers = [nn.Sequential(*_conv_bn(3, 32, 3, 2))]
        cin = 32
        for expand, cout, repeats, stride in MOBILENET_V2_SETTINGS:
            for r in range(repeats):
                s = stride if r == 0 else 1
                if len(layers) == 14:
                    s = last_stride
                layers.append(InvertedResidual(cin, cout, s, expand, classic))
                cin = cout
        layers.append(nn.Sequential(*_conv_bn(cin, 1280, 1, 1)))
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        return self.features(x)


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random conv weights and BatchNorm affine/statistics; returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(
                    torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5
                )
            elif isinstance(module, nn.BatchNorm2d):
                shape = module.weight.shape
                module.weight.copy_(0.75 + 0.5 * torch.rand(shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(shape, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
                module.running_var.copy_(0.75 + 0.5 * torch.rand(shape, generator=generator))
    return model.eval()
