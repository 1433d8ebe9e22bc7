"""ResNet trunk in torchvision's v1.5 layout (stride on the 3x3), written here so the
engine needs no torchvision. Parameter names match torchvision, and hence the
``feature_extractor.*`` keys of the official PyMAF checkpoint. No fc layer: PyMAF
uses the last feature map (and the pooled vector only for its batch size).
"""
from __future__ import annotations

import torch
from torch import nn

# depth -> (block type, blocks per stage)
RESNET_LAYOUTS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """3x3 -> 3x3 with identity (or 1x1 projection) shortcut; ResNet-18/34."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride here: v1.5) -> 1x1 (x4 channels); ResNet-50."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetTrunk(nn.Module):
    """ResNet without its classifier: (B, 3, H, W) -> (B, C, H/32, W/32).

    C = 2048 for depth 50, 512 for depth 18 and 34.
    """

    def __init__(self, depth: int = 50):
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_LAYOUTS)}, got {depth}")
        kind, counts = RESNET_LAYOUTS[depth]
        block = Bottleneck if kind == "bottleneck" else BasicBlock
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._cin = 64
        self.layer1 = self._make_stage(block, 64, counts[0], stride=1)
        self.layer2 = self._make_stage(block, 128, counts[1], stride=2)
        self.layer3 = self._make_stage(block, 256, counts[2], stride=2)
        self.layer4 = self._make_stage(block, 512, counts[3], stride=2)
        self.out_channels = 512 * block.expansion
        self._init_weights()

    def _make_stage(self, block, planes: int, count: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._cin != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self._cin, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        blocks = [block(self._cin, planes, stride, downsample)]
        self._cin = planes * block.expansion
        blocks += [block(self._cin, planes) for _ in range(1, count)]
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        # He init as torchvision (trained weights replace it; nothing is downloaded).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)
