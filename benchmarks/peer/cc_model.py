"""The ``mobilenet_v2`` architecture registered in cluster-contrast's model factory.

torchvision's MobileNetV2 trunk (ImageNet weights from a classic- or torchvision-layout state
dict) under the head of cluster-contrast's ``ResNet`` class, rewritten with the same semantics.
Its ``build_pooling_layer`` and factory are imported from the checkout at run time.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn import init


def classic_to_torchvision(state_dict: dict) -> dict:
    """Rename a classic MobileNetV2 state dict (``features.{i}.conv.{j}``) to torchvision's.

    Classic blocks are flat Sequentials: without expansion ``conv.{0 dw, 1 BN, 3 project, 4 BN}``,
    with expansion ``conv.{0 expand, 1 BN, 3 dw, 4 BN, 6 project, 7 BN}``. torchvision nests each
    conv+BN+ReLU6 in a Conv2dNormActivation, so those become ``conv.0.0``/``conv.0.1`` and so on.
    The stem ``features.0.{0,1}`` and the last 1x1 conv ``features.18.{0,1}`` match already.
    """
    expanded = {
        int(m.group(1)) for k in state_dict if (m := re.match(r"features\.(\d+)\.conv\.6\.", k))
    }
    plain = {0: "0.0", 1: "0.1", 3: "1", 4: "2"}
    with_expansion = {0: "0.0", 1: "0.1", 3: "1.0", 4: "1.1", 6: "2", 7: "3"}
    out = {}
    for key, value in state_dict.items():
        m = re.match(r"features\.(\d+)\.conv\.(\d+)\.(.+)$", key)
        if m is None:
            out[key] = value
            continue
        block, idx, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        table = with_expansion if block in expanded else plain
        if idx not in table:
            raise KeyError(f"unexpected classic MobileNetV2 key {key}")
        out[f"features.{block}.conv.{table[idx]}.{rest}"] = value
    return out


def build_trunk(weights: str | None, last_stride: int = 1) -> tuple[nn.Sequential, dict]:
    """torchvision's MobileNetV2 ``features`` (width 1.0) with ``weights`` loaded strictly.

    The trunk maps (N, 3, H, W) images to (N, 1280, H/16, W/16) feature maps with
    ``last_stride`` 1 (8x4 for 128x64 input), (N, 1280, H/32, W/32) with 2. Returns the trunk
    and a report: the weights path, the number of tensors loaded (312 for the full trunk),
    missing and unexpected keys (both empty, or it raises) and the last stride.
    """
    import torchvision

    net = torchvision.models.mobilenet_v2(weights=None)
    report = {"weights": weights, "loaded_tensors": 0, "missing": [], "unexpected": []}
    if weights:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = classic_to_torchvision(dict(state))
        if any(not k.startswith("features.") for k in state):
            # A full torchvision checkpoint: keep the trunk only.
            state = {k: v for k, v in state.items() if k.startswith("features.")}
        trunk_state = {k[len("features.") :]: v for k, v in state.items()}
        result = net.features.load_state_dict(trunk_state, strict=False)
        report.update(
            loaded_tensors=len(trunk_state),
            missing=list(result.missing_keys),
            unexpected=list(result.unexpected_keys),
        )
        if result.missing_keys or result.unexpected_keys:
            raise RuntimeError(f"MobileNetV2 weights do not fit torchvision's trunk: {report}")
    # features[14] opens the 160-channel stage: its depthwise conv is the last stride-2 layer.
    dw = net.features[14].conv[1][0]
    assert dw.stride == (2, 2) and dw.groups == dw.in_channels, dw
    if last_stride == 1:
        dw.stride = (1, 1)
    report["last_stride"] = last_stride
    return net.features, report


class MobileNetV2ReID(nn.Module):
    """MobileNetV2 trunk + the head of cluster-contrast's ``ResNet`` class.

    Same constructor arguments and forward semantics as its ``ResNet``: pooling from its
    ``build_pooling_layer`` (GeM with learnable p for ``gem``), optional Linear embedding, a
    BatchNorm1d neck whose bias is frozen, L2-normalised output in eval mode; in training the
    BN output is returned (L2-normalised if ``norm``, ReLU if an embedding without ``norm``,
    dropout, optional classifier).
    """

    trunk_report: dict = {}  # build_trunk's report for the last model built (for the JSON)

    def __init__(
        self,
        weights=None,
        last_stride=1,
        pretrained=True,
        cut_at_pooling=False,
        num_features=0,
        norm=False,
        dropout=0,
        num_classes=0,
        pooling_type="avg",
    ):
        super().__init__()
        from clustercontrast.models.pooling import build_pooling_layer

        self.pretrained = bool(weights) and pretrained
        self.cut_at_pooling = cut_at_pooling
        self.base, report = build_trunk(weights if pretrained else None, last_stride)
        MobileNetV2ReID.trunk_report = report
        self.gap = build_pooling_layer(pooling_type)
        out_planes = 1280
        if not cut_at_pooling:
            self.num_features = num_features
            self.norm = norm
            self.dropout = dropout
            self.has_embedding = num_features > 0
            self.num_classes = num_classes
            if self.has_embedding:
                self.feat = nn.Linear(out_planes, num_features)
                init.kaiming_normal_(self.feat.weight, mode="fan_out")
                init.constant_(self.feat.bias, 0)
            else:
                self.num_features = out_planes
            self.feat_bn = nn.BatchNorm1d(self.num_features)
            self.feat_bn.bias.requires_grad_(False)
            init.constant_(self.feat_bn.weight, 1)
            init.constant_(self.feat_bn.bias, 0)
            if dropout > 0:
                self.drop = nn.Dropout(dropout)
            if num_classes > 0:
                self.classifier = nn.Linear(self.num_features, num_classes, bias=False)
                init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x):
        """(N, 3, H, W) normalised images -> (N, num_features) embeddings (see the class)."""
        x = self.gap(self.base(x)).flatten(1)
        if self.cut_at_pooling:
            return x
        y = self.feat_bn(self.feat(x) if self.has_embedding else x)
        if not self.training:
            return F.normalize(y)
        if self.norm:
            y = F.normalize(y)
        elif self.has_embedding:
            y = F.relu(y)
        if self.dropout > 0:
            y = self.drop(y)
        return self.classifier(y) if self.num_classes > 0 else y


def register_mobilenet_v2(weights, last_stride=1, channels_last=False):
    """Add ``mobilenet_v2`` to ``clustercontrast.models``' factory (in memory only).

    Its ``create_model`` then builds ``MobileNetV2ReID`` with ``weights`` (a state-dict path or
    None for random init), in channels-last memory format if asked.
    """
    import clustercontrast.models as cc_models

    factory = vars(cc_models)["__factory"]  # module-level dict, so its name is not mangled

    def mobilenet_v2(**kwargs):
        model = MobileNetV2ReID(weights=weights, last_stride=last_stride, **kwargs)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    factory["mobilenet_v2"] = mobilenet_v2
