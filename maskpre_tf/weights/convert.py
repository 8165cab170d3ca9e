"""Import torchvision/timm weights into a Keras application trunk and write a weights file.

The output is the Keras weights file (``.weights.h5``) of the unmodified
``keras.applications.{ResNet50, MobileNetV2}(include_top=False)`` model, plus metadata stored in
the file (:data:`~maskpre_tf.weights.origin.METADATA_ATTR`: architecture, input normalisation
``torch``, layout ``torch``, source path and SHA-256, source key layout). Training builds the
trunk with PyTorch's layout from it (symmetric padding etc., see
:mod:`maskpre_tf.models.backbones`), which reproduces PyTorch's feature map. Tensor layouts:
a convolution kernel [out, in, kh, kw] becomes [kh, kw, in, out], a depthwise kernel
[C, 1, kh, kw] becomes [kh, kw, C, 1]; BatchNorm weight/bias/running_mean/running_var become
gamma/beta/moving_mean/moving_variance.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os

import numpy as np

from maskpre_tf import __version__
from maskpre_tf.errors import UserError
from maskpre_tf.weights import torch_keys
from maskpre_tf.weights.origin import METADATA_ATTR
from maskpre_tf.weights.safetensors import SafetensorsError, read_safetensors

ARCHS = ("resnet50", "mobilenet_v2")
# Keys a PyTorch classifier checkpoint holds besides the trunk; not imported.
_IGNORED_PREFIXES = ("fc.", "classifier.")


def sha256_of(path: str) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _torch_load(path: str) -> dict:
    try:
        import torch
    except ImportError as err:
        raise UserError(
            f"--src={path}: reading .pth/.pt files needs PyTorch, which is not "
            "installed; pip install 'maskpre-tf[convert]' (or convert the file to "
            ".safetensors, which needs no torch)"
        ) from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise UserError(
            f"--src={path}: not a readable PyTorch checkpoint ({err}); is it "
            "truncated? Download it again"
        ) from err
    if not isinstance(state, dict):
        raise UserError(
            f"--src={path}: holds a {type(state).__name__}, not a state dict; save "
            "model.state_dict() instead of the model"
        )
    state = torch_keys.strip_wrappers(state)
    return {
        k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
        for k, v in state.items()
        if hasattr(v, "numpy")
    }


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Tensors of a ``.pth``/``.pt``/``.bin`` (torch) or ``.safetensors`` (NumPy) file.

    Raises:
      UserError: missing, unreadable or truncated file, unknown extension, torch missing.
    """
    if not os.path.isfile(path):
        raise UserError(f"--src={path}: no such file")
    if path.endswith(".safetensors"):
        try:
            return torch_keys.strip_wrappers(read_safetensors(path))
        except (OSError, SafetensorsError) as err:
            raise UserError(
                f"--src={path}: not a valid safetensors file ({err}); download it again"
            ) from err
    if path.endswith((".pth", ".pt", ".bin")):
        return _torch_load(path)
    raise UserError(
        f"--src={path}: unknown format; expected a .pth, .pt, .bin or .safetensors "
        "PyTorch state dict"
    )


def _keras_tensor(kind: str, tensor: np.ndarray) -> np.ndarray:
    """A PyTorch tensor in the Keras layout of a layer of ``kind``."""
    if kind == "conv":
        return np.transpose(tensor, (2, 3, 1, 0))
    if kind == "depthwise":
        return np.transpose(tensor, (2, 3, 0, 1))
    return tensor


def assign_state_dict(
    model, mapping: torch_keys.Mapping, state: dict[str, np.ndarray], src: str
) -> list[str]:
    """Set every weight of ``model`` from ``state`` through ``mapping``.

    A Keras convolution bias that PyTorch does not have (Keras's ResNet50 convs carry one) is
    set to zero. Returns the state-dict keys that were not used.

    Raises:
      UserError: keys missing from ``state`` or tensors of the wrong shape.
    """
    used: set[str] = set()
    missing: list[str] = []
    for layer in model.layers:
        if not layer.weights:
            continue
        kind, prefix = mapping[layer.name]
        names = torch_keys.tensor_names(kind, prefix)
        if kind != "bn" and len(layer.weights) == 2 and f"{prefix}.bias" in state:
            names.append(f"{prefix}.bias")
        absent = [n for n in names if n not in state]
        if absent:
            missing += absent
            continue
        values = [_keras_tensor(kind, state[names[0]]), *(state[n] for n in names[1:])]
        if kind != "bn" and len(values) < len(layer.weights):
            values.append(np.zeros(layer.weights[1].shape, np.float32))
        for weight, value, name in zip(
            layer.weights, values, names + ["(zero bias)"], strict=False
        ):
            if tuple(weight.shape) != value.shape:
                raise UserError(
                    f"--src={src}: {name} has shape {value.shape} where "
                    f"{layer.name} needs {tuple(weight.shape)}; is it a width-1.0 "
                    "model of that architecture?"
                )
        layer.set_weights(values)
        used.update(names)
    if missing:
        raise UserError(
            f"--src={src}: {len(missing)} tensors missing, e.g. "
            f"{', '.join(missing[:3])}; pass a complete state dict of that "
            "architecture"
        )
    return sorted(
        k
        for k in state
        if k not in used
        and not k.endswith("num_batches_tracked")
        and not k.startswith(_IGNORED_PREFIXES)
    )


def _check_arch(arch: str, state: dict, src: str) -> str:
    """The source key layout of ``state``; raise if it is not a state dict of ``arch``."""
    found = torch_keys.detect_layout(state)
    if found is None:
        example = ", ".join(sorted(state)[:3]) or "no tensors"
        raise UserError(
            f"--src={src}: not a torchvision/timm resnet50 or mobilenet_v2 state dict "
            f"(keys like {example})"
        )
    if found[0] != arch:
        raise UserError(
            f"--src={src} holds {found[0]} weights but --arch={arch}; pass --arch={found[0]}"
        )
    return found[1]


def import_weights(arch: str, src: str, out: str) -> dict:
    """Convert the PyTorch weights at ``src`` into the Keras weights file ``out``.

    ``out`` is written to a temporary file next to it and renamed into place, so a failure
    leaves nothing at ``out``. Returns the metadata written.
    """
    import h5py
    import keras

    if arch not in ARCHS:
        raise UserError(f"--arch={arch}: expected one of {', '.join(ARCHS)}")
    if not out.endswith(".weights.h5"):
        raise UserError(f"--out={out}: the name must end in .weights.h5 (Keras weights file)")
    state = load_state_dict(src)
    source_layout = _check_arch(arch, state, src)
    builder = {
        "resnet50": keras.applications.ResNet50,
        "mobilenet_v2": keras.applications.MobileNetV2,
    }[arch]
    model = builder(include_top=False, weights=None, input_shape=(224, 224, 3))
    unused = assign_state_dict(model, torch_keys.mapping_for(arch, source_layout), state, src)
    if unused:
        raise UserError(
            f"--src={src}: {len(unused)} tensors do not belong to a {arch} trunk, "
            f"e.g. {', '.join(unused[:3])}; is it another variant of the model?"
        )
    meta = {
        "format": 1,
        "arch": arch,
        "input_norm": "torch",
        "layout": "torch",
        "padding": "symmetric, as PyTorch pads convolutions",
        "source": os.path.abspath(src),
        "source_sha256": sha256_of(src),
        "source_layout": source_layout,
        "converted_with": f"maskpre_tf {__version__}",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    directory = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(directory):
        raise UserError(f"--out={out}: folder {directory} does not exist")
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(out)}")
    try:
        model.save_weights(tmp)
        with h5py.File(tmp, "a") as f:
            f.attrs[METADATA_ATTR] = json.dumps(meta)
        os.replace(tmp, out)
    except OSError as err:
        raise UserError(f"--out={out}: could not write it ({err})") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return meta
