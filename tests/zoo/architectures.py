"""Hand-written torch definitions of architectures people actually ship.

torchvision is not importable here, so every model is spelled out by hand. Channel widths and
topology follow the published models (torchvision / ultralytics layouts) so the ONNX graphs
contain the same patterns a pruner meets in the wild: residual adds, depthwise and grouped
convs, SE gates, dense concats, chunk/split, channel shuffle, upsample + concat necks, flatten
into Gemm, MatMul on 3-D activations. Only the input resolution is small, to keep tests fast.

Nothing in here depends on export details; export.py turns these into ONNX files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

SEED = 0


# --------------------------------------------------------------------------------------------
# shared building blocks
# --------------------------------------------------------------------------------------------


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels the way MobileNet/EfficientNet reference code does (keeps real widths)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNAct(nn.Sequential):
    """Conv2d(bias=False) -> BatchNorm2d -> optional activation: the unit BN folding targets."""

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int = 3,
        s: int = 1,
        groups: int = 1,
        act: Callable[[], nn.Module] | None = nn.ReLU,
        padding: int | None = None,
    ) -> None:
        pad = (k - 1) // 2 if padding is None else padding
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, s, pad, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


# --------------------------------------------------------------------------------------------
# ResNet-18 / ResNet-50 (torchvision layout)
# --------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet-18/34 block: two 3x3 convs, identity or 1x1-conv downsample shortcut."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet-50 / ResNeXt block: 1x1 reduce, (grouped) 3x3, 1x1 expand x4."""

    expansion = 4

    def __init__(
        self, cin: int, planes: int, stride: int = 1, groups: int = 1, base_width: int = 64
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision ResNet/ResNeXt: 7x7 stem, maxpool, 4 stages, global pool, fc."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        groups: int = 1,
        width_per_group: int = 64,
    ) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages = []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            blocks: list[nn.Module] = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                if block is Bottleneck:
                    blocks.append(block(self.inplanes, planes, stride, groups, width_per_group))
                else:
                    blocks.append(block(self.inplanes, planes, stride))
                self.inplanes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18() -> nn.Module:
    return ResNet(BasicBlock, [2, 2, 2, 2])


def resnet50() -> nn.Module:
    return ResNet(Bottleneck, [3, 4, 6, 3])


def resnext() -> nn.Module:
    """ResNeXt-50 32x4d widths (grouped 3x3, groups=32, width 4) with 2 blocks per stage."""
    return ResNet(Bottleneck, [2, 2, 2, 2], groups=32, width_per_group=4)


# --------------------------------------------------------------------------------------------
# MobileNetV2
# --------------------------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (ReLU6), depthwise 3x3 (ReLU6), linear 1x1 project."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(cin, hidden, 1, act=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision mobilenet_v2; ``width`` scales every width as torchvision's ``width_mult``
    does (0.35 is the narrowest variant Keras and TF-Slim ship), keeping the 1280-channel head."""

    def __init__(self, num_classes: int = 1000, width: float = 1.0) -> None:
        super().__init__()
        cfg = [  # t, c, n, s
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        ]
        cin = make_divisible(32 * width)
        layers: list[nn.Module] = [ConvBNAct(3, cin, 3, 2, act=nn.ReLU6)]
        for t, c, n, s in cfg:
            cout = make_divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(ConvBNAct(cin, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2() -> nn.Module:
    return MobileNetV2()


# --------------------------------------------------------------------------------------------
# MobileNetV3 (Small and Large)
# --------------------------------------------------------------------------------------------


class SqueezeExcitation(nn.Module):
    """SE gate: global pool -> 1x1 reduce -> act -> 1x1 expand -> gate -> channel-wise Mul."""

    def __init__(
        self,
        channels: int,
        squeeze: int,
        act: Callable[[], nn.Module] = nn.ReLU,
        gate: Callable[[], nn.Module] = nn.Hardsigmoid,
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(self.fc2(self.act(self.fc1(self.avgpool(x)))))
        return x * s


class MobileNetV3Block(nn.Module):
    """MobileNetV3 bneck: optional expand, depthwise kxk, optional SE, linear project."""

    def __init__(
        self, cin: int, k: int, exp: int, cout: int, use_se: bool, act: str, stride: int
    ) -> None:
        super().__init__()
        act_layer: Callable[[], nn.Module] = nn.Hardswish if act == "HS" else nn.ReLU
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if exp != cin:
            layers.append(ConvBNAct(cin, exp, 1, act=act_layer))
        layers.append(ConvBNAct(exp, exp, k, stride, groups=exp, act=act_layer))
        if use_se:
            layers.append(SqueezeExcitation(exp, make_divisible(exp // 4, 8)))
        layers.append(ConvBNAct(exp, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res else y


# in, kernel, expanded, out, SE, activation ("RE" ReLU / "HS" HardSwish), stride: torchvision's
# bneck tables, before the width multiplier.
_MNV3_SMALL = [
    (16, 3, 16, 16, True, "RE", 2),
    (16, 3, 72, 24, False, "RE", 2),
    (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1),
    (48, 5, 144, 48, True, "HS", 1),
    (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1),
    (96, 5, 576, 96, True, "HS", 1),
]
_MNV3_LARGE = [
    (16, 3, 16, 16, False, "RE", 1),
    (16, 3, 64, 24, False, "RE", 2),
    (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", 2),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2),
    (80, 3, 200, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 480, 112, True, "HS", 1),
    (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2),
    (160, 5, 960, 160, True, "HS", 1),
    (160, 5, 960, 160, True, "HS", 1),
]


class MobileNetV3(nn.Module):
    """torchvision mobilenet_v3_{small,large}: ``width`` scales every width as torchvision's
    ``width_mult`` does (head included), so 0.75 is timm's shipped mobilenetv3_large_075."""

    def __init__(
        self,
        cfg: list[tuple[int, int, int, int, bool, str, int]],
        last_channel: int,
        num_classes: int = 1000,
        width: float = 1.0,
    ) -> None:
        super().__init__()

        def w(c: int) -> int:
            return make_divisible(c * width)

        layers: list[nn.Module] = [ConvBNAct(3, w(cfg[0][0]), 3, 2, act=nn.Hardswish)]
        layers += [MobileNetV3Block(w(cin), k, w(exp), w(cout), se, act, s)
                   for cin, k, exp, cout, se, act, s in cfg]
        head_in = w(cfg[-1][3])
        layers.append(ConvBNAct(head_in, 6 * head_in, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(6 * head_in, w(last_channel)), nn.Hardswish(), nn.Dropout(0.2),
            nn.Linear(w(last_channel), num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def MobileNetV3Small(num_classes: int = 1000, width: float = 1.0) -> nn.Module:  # noqa: N802
    """torchvision mobilenet_v3_small (width 1.0 by default)."""
    return MobileNetV3(_MNV3_SMALL, 1024, num_classes, width)


def MobileNetV3Large(num_classes: int = 1000, width: float = 1.0) -> nn.Module:  # noqa: N802
    """torchvision mobilenet_v3_large (width 1.0 by default)."""
    return MobileNetV3(_MNV3_LARGE, 1280, num_classes, width)


def mobilenet_v3_small() -> nn.Module:
    return MobileNetV3Small()


# --------------------------------------------------------------------------------------------
# VGG16-BN
# --------------------------------------------------------------------------------------------


class VGG16BN(nn.Module):
    """VGG16 with BN (config D, real conv widths).

    The classifier is shrunk from 25088->4096->4096 (a 500 MB file) to 2048->512->512, but it
    still flattens a 512x2x2 map into the first Linear, so pruning a conv channel must remove
    4 consecutive Gemm input rows, the flatten case pruners get wrong.
    """

    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in self.cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                assert isinstance(v, int)
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(512 * 2 * 2, 512),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(512, 512),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def vgg16_bn() -> nn.Module:
    return VGG16BN()


# --------------------------------------------------------------------------------------------
# DenseNet-BC (small)
# --------------------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    """Pre-activation BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k); the first BN follows a Concat."""

    def __init__(self, cin: int, growth: int, bn_size: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.Module):
    """torchvision-style dense block: every layer sees torch.cat of all previous outputs."""

    def __init__(self, n: int, cin: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth) for i in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    """DenseNet-BC, growth 12, 3 blocks of 6 layers, compression 0.5 (CIFAR layout)."""

    def __init__(
        self, growth: int = 12, layers: tuple[int, ...] = (6, 6, 6), num_classes: int = 10
    ):
        super().__init__()
        c = 2 * growth
        mods: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1, bias=False)]
        for i, n in enumerate(layers):
            mods.append(DenseBlock(n, c, growth))
            c += n * growth
            if i != len(layers) - 1:
                cout = c // 2
                mods += [  # transition
                    nn.BatchNorm2d(c),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(c, cout, 1, bias=False),
                    nn.AvgPool2d(2, 2),
                ]
                c = cout
        mods += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1)]
        self.features = nn.Sequential(*mods)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def densenet() -> nn.Module:
    return DenseNet()


# --------------------------------------------------------------------------------------------
# YOLOv8n (ultralytics layout, raw head outputs)
# --------------------------------------------------------------------------------------------


def yolo_conv(cin: int, cout: int, k: int = 1, s: int = 1) -> nn.Module:
    """ultralytics Conv: Conv2d(bias=False)-BN-SiLU."""
    return ConvBNAct(cin, cout, k, s, act=nn.SiLU)


class YoloBottleneck(nn.Module):
    """Two 3x3 Convs with optional shortcut add (C2f inner block, e=1.0)."""

    def __init__(self, c: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1 = yolo_conv(c, c, 3)
        self.cv2 = yolo_conv(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """YOLOv8 C2f: 1x1 conv, split in two halves, chain of bottlenecks, concat everything.

    ``use_split`` selects ultralytics' forward_split (``.split((c, c), 1)``) instead of the
    default ``.chunk(2, 1)``; the zoo uses both so pruning rules meet both export patterns.
    """

    def __init__(self, c1: int, c2: int, n: int, shortcut: bool, use_split: bool = False):
        super().__init__()
        self.c = c2 // 2
        self.use_split = use_split
        self.cv1 = yolo_conv(c1, 2 * self.c, 1)
        self.cv2 = yolo_conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(YoloBottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0 = self.cv1(x)
        y = list(y0.split((self.c, self.c), 1) if self.use_split else y0.chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling - fast: one 1x1 conv, 3 chained 5x5 maxpools, concat of 4."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = yolo_conv(c1, c_, 1)
        self.cv2 = yolo_conv(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class Detect(nn.Module):
    """YOLOv8 Detect head without decoding: per level cat(box branch, cls branch)."""

    def __init__(self, nc: int, ch: tuple[int, ...], reg_max: int = 16) -> None:
        super().__init__()
        c2 = max(16, ch[0] // 4, reg_max * 4)
        c3 = max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(yolo_conv(x, c2, 3), yolo_conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
            for x in ch
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(yolo_conv(x, c3, 3), yolo_conv(c3, c3, 3), nn.Conv2d(c3, nc, 1))
            for x in ch
        )

    def forward(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return tuple(
            torch.cat((b(x), c(x)), 1) for x, b, c in zip(xs, self.cv2, self.cv3, strict=True)
        )


class YOLOv8(nn.Module):
    """YOLOv8n (width 0.25, depth 0.33) backbone + PAN neck + 3 raw detection outputs."""

    def __init__(self, nc: int = 80) -> None:
        super().__init__()
        self.b0 = yolo_conv(3, 16, 3, 2)
        self.b1 = yolo_conv(16, 32, 3, 2)
        self.b2 = C2f(32, 32, 1, True)
        self.b3 = yolo_conv(32, 64, 3, 2)
        self.b4 = C2f(64, 64, 2, True)
        self.b5 = yolo_conv(64, 128, 3, 2)
        self.b6 = C2f(128, 128, 2, True)
        self.b7 = yolo_conv(128, 256, 3, 2)
        self.b8 = C2f(256, 256, 1, True)
        self.b9 = SPPF(256, 256, 5)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.h12 = C2f(256 + 128, 128, 1, False, use_split=True)
        self.h15 = C2f(128 + 64, 64, 1, False, use_split=True)
        self.h16 = yolo_conv(64, 64, 3, 2)
        self.h18 = C2f(64 + 128, 128, 1, False, use_split=True)
        self.h19 = yolo_conv(128, 128, 3, 2)
        self.h21 = C2f(128 + 256, 256, 1, False, use_split=True)
        self.detect = Detect(nc, (64, 128, 256))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
        p4 = self.b6(self.b5(p3))
        p5 = self.b9(self.b8(self.b7(p4)))
        n4 = self.h12(torch.cat((self.up(p5), p4), 1))
        o3 = self.h15(torch.cat((self.up(n4), p3), 1))
        o4 = self.h18(torch.cat((self.h16(o3), n4), 1))
        o5 = self.h21(torch.cat((self.h19(o4), p5), 1))
        return self.detect([o3, o4, o5])


def yolo() -> nn.Module:
    return YOLOv8()


# --------------------------------------------------------------------------------------------
# UNet (small)
# --------------------------------------------------------------------------------------------


class DoubleConv(nn.Sequential):
    """(Conv3x3-BN-ReLU) x 2, the UNet stage."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(ConvBNAct(cin, cout, 3), ConvBNAct(cout, cout, 3))


class UNet(nn.Module):
    """UNet with widths 16..256 (the paper's 64..1024 / 4), ConvTranspose2d up, skip concat."""

    def __init__(self, cin: int = 3, n_classes: int = 2, base: int = 16) -> None:
        super().__init__()
        w = [base * 2**i for i in range(5)]
        self.inc = DoubleConv(cin, w[0])
        self.downs = nn.ModuleList(DoubleConv(w[i], w[i + 1]) for i in range(4))
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(w[i + 1], w[i], 2, 2) for i in reversed(range(4))
        )
        self.up_convs = nn.ModuleList(DoubleConv(2 * w[i], w[i]) for i in reversed(range(4)))
        self.outc = nn.Conv2d(w[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(self.pool(skips[-1])))
        x = skips.pop()
        for up, conv in zip(self.ups, self.up_convs, strict=True):
            x = conv(torch.cat((skips.pop(), up(x)), 1))
        return self.outc(x)


def unet() -> nn.Module:
    return UNet()


# --------------------------------------------------------------------------------------------
# ShuffleNetV2 x1.0
# --------------------------------------------------------------------------------------------


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """torchvision's shuffle: view(b, g, c/g, h, w) -> transpose(1, 2) -> view(b, c, h, w)."""
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, num_channels, height, width)


class ShuffleBlock(nn.Module):
    """ShuffleNetV2 unit: chunk (stride 1) or two branches (stride 2), concat, shuffle."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        bf = cout // 2
        if stride > 1:
            self.branch1: nn.Module = nn.Sequential(
                ConvBNAct(cin, cin, 3, stride, groups=cin, act=None),
                ConvBNAct(cin, bf, 1),
            )
        else:
            self.branch1 = nn.Identity()
        c2in = cin if stride > 1 else bf
        self.branch2 = nn.Sequential(
            ConvBNAct(c2in, bf, 1),
            ConvBNAct(bf, bf, 3, stride, groups=bf, act=None),
            ConvBNAct(bf, bf, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """torchvision shufflenet_v2_x1_0: widths 24/116/232/464/1024, repeats 4/8/4."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(3, 24, 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 24
        stages: list[nn.Module] = []
        for reps, cout in zip((4, 8, 4), (116, 232, 464), strict=True):
            blocks = [ShuffleBlock(cin, cout, 2)]
            blocks += [ShuffleBlock(cout, cout, 1) for _ in range(reps - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = ConvBNAct(cin, 1024, 1)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(x.mean([2, 3]))


def shufflenet_v2() -> nn.Module:
    return ShuffleNetV2()


# --------------------------------------------------------------------------------------------
# EfficientNet-B0
# --------------------------------------------------------------------------------------------


class MBConv(nn.Module):
    """EfficientNet MBConv: expand 1x1 (SiLU), depthwise kxk (SiLU), SE (sigmoid), project."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(cin, hidden, 1, act=nn.SiLU))
        layers += [
            ConvBNAct(hidden, hidden, k, stride, groups=hidden, act=nn.SiLU),
            SqueezeExcitation(hidden, max(1, cin // 4), act=nn.SiLU, gate=nn.Sigmoid),
            ConvBNAct(hidden, cout, 1, act=None),
        ]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res else y


class EfficientNetB0(nn.Module):
    """torchvision efficientnet_b0 layout (16 MBConv blocks, stem 32, head 1280)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        cfg = [  # expand, k, stride, in, out, layers
            (1, 3, 1, 32, 16, 1),
            (6, 3, 2, 16, 24, 2),
            (6, 5, 2, 24, 40, 2),
            (6, 3, 2, 40, 80, 3),
            (6, 5, 1, 80, 112, 3),
            (6, 5, 2, 112, 192, 4),
            (6, 3, 1, 192, 320, 1),
        ]
        layers: list[nn.Module] = [ConvBNAct(3, 32, 3, 2, act=nn.SiLU)]
        for e, k, s, cin, cout, n in cfg:
            for i in range(n):
                layers.append(MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e))
        layers.append(ConvBNAct(320, 1280, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def efficientnet() -> nn.Module:
    return EfficientNetB0()


# --------------------------------------------------------------------------------------------
# MLPs
# --------------------------------------------------------------------------------------------


class MLPGemm(nn.Module):
    """Tabular MLP on [N, F]: every Linear exports as Gemm(transB=1)."""

    def __init__(self, fin: int = 64, hidden: int = 256, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(fin, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPMatMul(nn.Module):
    """Token MLP on [N, T, F] (transformer-FFN style with a residual): Linear -> MatMul + Add."""

    def __init__(self, fin: int = 32, dim: int = 128, hidden: int = 512, num_classes: int = 10):
        super().__init__()
        self.proj = nn.Linear(fin, dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        x = x + self.fc2(self.act(self.fc1(x)))
        return self.head(x)


def mlp_gemm() -> nn.Module:
    return MLPGemm()


def mlp_matmul() -> nn.Module:
    return MLPMatMul()


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchSpec:
    """How to build one zoo entry and what its ONNX interface looks like (batch 1 shapes)."""

    factory: Callable[[], nn.Module]
    inputs: dict[str, tuple[int, ...]]
    outputs: tuple[str, ...] = ("output",)


_IMG64 = {"input": (1, 3, 64, 64)}
_IMG32 = {"input": (1, 3, 32, 32)}

SPECS: dict[str, ArchSpec] = {
    "resnet18": ArchSpec(resnet18, _IMG64),
    "resnet50": ArchSpec(resnet50, _IMG64),
    "mobilenet_v2": ArchSpec(mobilenet_v2, _IMG64),
    "mobilenet_v3_small": ArchSpec(mobilenet_v3_small, _IMG64),
    "vgg16_bn": ArchSpec(vgg16_bn, _IMG64),
    "densenet": ArchSpec(densenet, _IMG32),
    "yolo": ArchSpec(yolo, _IMG64, ("output0", "output1", "output2")),
    "unet": ArchSpec(unet, _IMG64),
    "shufflenet_v2": ArchSpec(shufflenet_v2, _IMG64),
    "resnext": ArchSpec(resnext, _IMG64),
    "efficientnet": ArchSpec(efficientnet, _IMG64),
    "mlp_gemm": ArchSpec(mlp_gemm, {"input": (1, 64)}),
    "mlp_matmul": ArchSpec(mlp_matmul, {"input": (1, 8, 32)}),
}


def randomize_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    """Give every BN non-trivial statistics and affine params so BN is never an identity.

    With default init (mean 0, var 1, weight 1, bias 0) a pruner that forgets to slice BN
    parameters, or folds them wrongly, would still produce correct numbers.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)


def init_weights(model: nn.Module, gen: torch.Generator, gain: float = 1.0) -> None:
    """Scaled-normal conv/linear init so activations keep O(1) scale through deep nets.

    torch's default init shrinks activations layer by layer; in a 50-layer net the outputs
    end up tiny and an rtol/atol comparison against ORT stops testing anything.
    """
    layers = [
        m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear)
    ]
    for m in layers:
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
        # Last layer at 1/4 scale (torchvision also inits classifier heads small): outputs stay
        # O(0.1-1), where the absolute atol of ORT-vs-torch comparisons is still meaningful.
        std = gain / math.sqrt(fan_in) * (0.25 if m is layers[-1] else 1.0)
        with torch.no_grad():
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.05)


_INIT_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.modules.batchnorm._BatchNorm)


def build(name: str, seed: int = SEED) -> nn.Module:
    """Deterministically build zoo model ``name`` in eval mode (same weights in every process).

    The module is created on the meta device and every tensor is then drawn from one seeded
    generator: faster than torch's default init (overwritten anyway) and independent of the
    global RNG state.
    """
    with torch.device("meta"):
        model = SPECS[name].factory()
    uncovered = [
        type(m).__name__
        for m in model.modules()
        if not isinstance(m, _INIT_TYPES) and any(True for _ in m.parameters(recurse=False))
    ]
    if uncovered:  # a new layer type would otherwise keep uninitialised memory
        raise TypeError(f"{name}: no init rule for {sorted(set(uncovered))}")
    model = model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    init_weights(model, gen)
    randomize_batchnorm(model, gen)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.num_batches_tracked is not None:
            m.num_batches_tracked.zero_()
    return model.eval()
