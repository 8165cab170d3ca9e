"""Weight import from PyTorch (torchvision and classic layouts) and the weights' origin.

The PyTorch trunks are built here with random weights (tests/torch_reference_models.py, no
download); torch comes from the optional ``convert`` extra and the import tests skip without it.
"""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from maskpre_tf.errors import UserError  # noqa: E402
from maskpre_tf.weights.convert import import_weights  # noqa: E402
from maskpre_tf.weights.origin import read_metadata, resolve_origin  # noqa: E402
from maskpre_tf.weights.safetensors import read_safetensors, write_safetensors  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPE = (64, 32, 3)

try:
    import torch
except ImportError:  # pragma: no cover - depends on the optional extra
    torch = None
needs_torch = pytest.mark.skipif(
    torch is None,
    reason="torch is not installed; pip install "
    "'maskpre-tf[convert]' to run the PyTorch import tests",
)


def _images(seed: int = 0) -> np.ndarray:
    """Smooth random RGB pixels in 0–255, [4, H, W, 3]."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (4, SHAPE[0] // 8, SHAPE[1] // 8, 3))
    return np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2).astype(np.float32)


def _agreement(torch_model, keras_backbone) -> tuple[float, float]:
    """(min pooled cosine, max |map difference| / max |map|) on normalised random images."""
    from maskpre_tf.models.normalization import normalize_pixels

    x = normalize_pixels(_images(), "torch").numpy()
    keras_map = keras_backbone(x, training=False).numpy()
    with torch.no_grad():
        torch_map = torch_model(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch_map = torch_map.numpy()
    assert keras_map.shape == torch_map.shape
    a, b = keras_map.mean((1, 2)), torch_map.mean((1, 2))
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return float(cosine.min()), float(np.abs(keras_map - torch_map).max() / np.abs(torch_map).max())


def _torch_trunk(arch: str, layout: str, last_stride: int):
    from torch_reference_models import MobileNetV2Trunk, ResNet50Trunk, randomise

    if arch == "resnet50":
        return randomise(ResNet50Trunk(last_stride=last_stride))
    return randomise(MobileNetV2Trunk(classic=layout == "classic", last_stride=last_stride))


@needs_torch
@pytest.mark.parametrize(
    "arch, layout, last_stride, suffix",
    [
        ("resnet50", "torchvision", 1, ".pth"),
        ("resnet50", "torchvision", 2, ".safetensors"),
        ("mobilenet_v2", "torchvision", 1, ".pt"),
        ("mobilenet_v2", "classic", 1, ".safetensors"),
        ("mobilenet_v2", "classic", 2, ".pth"),
    ],
)
def test_imported_backbone_reproduces_the_pytorch_feature_map(
    tmp_path, arch, layout, last_stride, suffix
):
    from maskpre_tf.models.backbones import build_backbone

    trunk = _torch_trunk(arch, layout, last_stride)
    src = str(tmp_path / f"trunk{suffix}")
    state = {k: v for k, v in trunk.state_dict().items()}
    if suffix == ".safetensors":
        write_safetensors(src, {k: v.numpy() for k, v in state.items()})
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, src)
    out = str(tmp_path / "trunk.weights.h5")
    meta = import_weights(arch, src, out)
    assert (meta["arch"], meta["source_layout"], meta["input_norm"], meta["layout"]) == (
        arch,
        layout,
        "torch",
        "torch",
    )
    assert read_metadata(out) == meta
    backbone = build_backbone(arch, SHAPE, weights=out, last_stride=last_stride, layout="torch")
    cosine, difference = _agreement(trunk, backbone)
    assert cosine >= 0.9999 and difference <= 1e-4, (cosine, difference)
    # Keras's own layout (asymmetric padding, BN epsilon 1e-3, v1 strides) does not match.
    keras_layout = build_backbone(arch, SHAPE, weights=out, last_stride=last_stride)
    assert _agreement(trunk, keras_layout)[1] > 1e-3


@needs_torch
def test_bad_sources_fail_with_the_fix_and_leave_nothing_at_out(tmp_path):
    trunk = _torch_trunk("mobilenet_v2", "classic", 2)
    good = str(tmp_path / "mobilenet.pth")
    torch.save(trunk.state_dict(), good)
    out = str(tmp_path / "out.weights.h5")
    truncated = str(tmp_path / "truncated.pth")
    with open(good, "rb") as f, open(truncated, "wb") as g:
        g.write(f.read()[: os.path.getsize(good) // 2])
    partial = str(tmp_path / "partial.safetensors")
    state = {k: v.numpy() for k, v in trunk.state_dict().items() if "features.18" not in k}
    write_safetensors(partial, state)
    cases = [
        (
            "resnet50",
            good,
            "holds mobilenet_v2 weights but --arch=resnet50; pass --arch=mobilenet_v2",
        ),
        ("mobilenet_v2", truncated, "not a readable PyTorch checkpoint"),
        ("mobilenet_v2", partial, "tensors missing, e.g. features.18.0.weight"),
        ("mobilenet_v2", str(tmp_path / "none.pth"), "no such file"),
        ("mobilenet_v2", str(tmp_path / "x.onnx"), "unknown format"),
    ]
    open(str(tmp_path / "x.onnx"), "wb").close()
    for arch, src, message in cases:
        with pytest.raises(UserError, match=message):
            import_weights(arch, src, out)
        assert not os.path.exists(out) and not [n for n in os.listdir(tmp_path) if ".tmp" in n]
    with pytest.raises(UserError, match="must end in .weights.h5"):
        import_weights("mobilenet_v2", good, str(tmp_path / "out.h5"))


def test_pth_without_torch_says_how_to_get_it(tmp_path):
    src = tmp_path / "model.pth"
    src.write_bytes(b"PK\x03\x04 not really a checkpoint")
    code = (
        "import sys\n"
        "class NoTorch:  # as on a machine without the optional extra\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch': raise ImportError(name)\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from maskpre_tf.weights.__main__ import define_flags, main\n"
        "from maskpre_tf.errors import run_main\n"
        "from absl import app\n"
        "define_flags(); app.run(lambda argv: run_main(main, argv))\n"
    )
    out = tmp_path / "out.weights.h5"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "import",
            "--arch=mobilenet_v2",
            f"--src={src}",
            f"--out={out}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "needs PyTorch, which is not installed; pip install 'maskpre-tf[convert]'" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr and not out.exists()


def test_safetensors_reader_round_trip_and_truncation(tmp_path):
    tensors = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([1, -2], np.int64),
        "c": np.float16([0.5, 1.5]),
    }
    path = str(tmp_path / "t.safetensors")
    write_safetensors(path, tensors)
    back = read_safetensors(path)
    for name, value in tensors.items():
        np.testing.assert_array_equal(back[name], value)
        assert back[name].dtype == value.dtype
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-4])
    from maskpre_tf.weights.safetensors import SafetensorsError

    with pytest.raises(SafetensorsError, match="truncated"):
        read_safetensors(path)


def test_origin_of_weights_decides_normalisation_and_layout(tmp_path):
    import keras

    assert resolve_origin("resnet50", "imagenet") == ("caffe", "keras")
    assert resolve_origin("mobilenet_v2", "imagenet").input_norm == "tf"
    assert resolve_origin("resnet_small", "none", "caffe").input_norm == "caffe"
    with pytest.raises(UserError, match="--input_norm=torch contradicts Keras's ImageNet"):
        resolve_origin("resnet50", "imagenet", "torch")
    plain = str(tmp_path / "plain.weights.h5")
    keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(96, 96, 3)
    ).save_weights(plain)
    with pytest.raises(
        UserError, match="does not say how its inputs were normalised; pass --input_norm=caffe"
    ):
        resolve_origin("mobilenet_v2", plain)
    assert resolve_origin("mobilenet_v2", plain, "tf") == ("tf", "keras")
    with h5py.File(plain, "a") as f:  # what the importer writes
        f.attrs["maskpre_tf_weights"] = (
            '{"arch": "mobilenet_v2", "input_norm": "torch", "layout": "torch"}'
        )
    assert resolve_origin("mobilenet_v2", plain) == ("torch", "torch")
    with pytest.raises(UserError, match="holds mobilenet_v2 weights but --backbone=resnet50"):
        resolve_origin("resnet50", plain)
    with pytest.raises(UserError, match="contradicts"):
        resolve_origin("mobilenet_v2", plain, "tf")
    torch_file = tmp_path / "resnet50.pth"
    torch_file.write_bytes(b"x")
    with pytest.raises(UserError, match="convert it first: python -m maskpre_tf.weights import"):
        resolve_origin("resnet50", str(torch_file))
    broken = tmp_path / "broken.weights.h5"
    broken.write_bytes(b"\x89HDF\r\n")
    with pytest.raises(UserError, match="not a readable Keras weights file"):
        resolve_origin("resnet50", str(broken), "caffe")
