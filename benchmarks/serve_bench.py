"""Serving benchmark: the exported SavedModel and ONNX model against the Keras teacher, in one run.

Measured on the same encoder and the same images:

* latency at batch 1 (p50 / p95, milliseconds) and throughput at batch 64 (images/s) of
  - ``keras predict``: ``ReidEncoder.predict`` on normalised pixels (the baseline),
  - ``keras call``: the teacher called inside a ``tf.function`` (what evaluation does),
  - ``saved_model pixels``: the loaded export's ``embed_images`` signature (0–255 pixels),
  - ``saved_model jpeg``: the ``serving_default`` signature on JPEG bytes (decode + resize +
    normalise in-graph, what a TF Serving client sends),
  - ``onnxruntime pixels``: the ``model.onnx`` of ``--format=onnx`` in an onnxruntime CPU
    session (0–255 pixels; default session options: every optimisation, one thread per
    physical core); left out, with a note, when the ``onnx`` extra is not installed;
* ratios against ``keras predict`` and the JPEG-bytes overhead in % over the pixel signature.

The images are generated pedestrians (``maskpre_tf.data.synth``, 128×64 JPEGs as in
Market-1501), resized to the model input. Weights are random (no download): speed does not
depend on them.

    python benchmarks/serve_bench.py            # ResNet-50, 256x128 (a few minutes on 2 cores)
    python benchmarks/serve_bench.py --quick    # resnet_small, 64x32, smoke run
    python benchmarks/serve_bench.py --backbone=mobilenet_v2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from maskpre_tf.config import TrainConfig  # noqa: E402
from maskpre_tf.data.images import decode_image  # noqa: E402
from maskpre_tf.data.synth import generate  # noqa: E402
from maskpre_tf.export import export_encoder, export_onnx  # noqa: E402
from maskpre_tf.models.encoder import build_encoder  # noqa: E402
from maskpre_tf.weights.origin import resolve_origin  # noqa: E402


def timings(
    fns: dict[str, Callable[[], object]], runs: int, warmup: int = 2
) -> dict[str, np.ndarray]:
    """Wall-clock seconds of ``runs`` calls of each function, after ``warmup`` untimed calls.

    The functions take turns (round robin), so load from other processes on a shared machine
    hits every variant alike.

    Returns:
      {name: float64 [runs] seconds}.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out = {name: np.empty(runs) for name in fns}
    for i in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            out[name][i] = time.perf_counter() - start
    return out


def sample_jpegs(count: int, seed: int) -> list[bytes]:
    """``count`` generated pedestrian JPEGs (Market-1501 size), as file contents."""
    with tempfile.TemporaryDirectory() as tmp:
        identities = max(4, count // 6 + 4)
        generate(tmp, identities=identities, cameras=3, seed=seed, verbose=False)
        folder = os.path.join(tmp, "bounding_box_train")
        names = sorted(os.listdir(folder))
        if len(names) < count:
            raise RuntimeError(f"generated {len(names)} images, need {count}")
        files = []
        for name in names[:count]:
            with open(os.path.join(folder, name), "rb") as f:
                files.append(f.read())
    return files


def onnx_session(teacher, cfg, tmp: str) -> tuple[object | None, str]:
    """(onnxruntime session on the teacher's ONNX export, or None; a note on the conversion)."""
    try:
        import onnxruntime as ort

        from maskpre_tf.export.onnx import require_converter

        require_converter()
    except Exception as err:  # the optional extra is missing: benchmark the rest
        return None, f"onnxruntime left out ({err})"
    start = time.perf_counter()
    path = export_onnx(teacher, cfg, os.path.join(tmp, "model.onnx"))
    convert_s = time.perf_counter() - start
    start = time.perf_counter()
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - start
    note = (
        f"ONNX: convert {convert_s:.1f} s, session {load_s:.2f} s, "
        f"onnxruntime {ort.__version__}, {os.path.getsize(path) / 2**20:.1f} MiB"
    )
    return sess, note


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small model and few runs")
    parser.add_argument("--backbone", default=None, help="default resnet50 (quick: resnet_small)")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--batch", type=int, default=64, help="throughput batch size")
    parser.add_argument("--latency_runs", type=int, default=None)
    parser.add_argument("--throughput_runs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    quick = args.quick
    backbone = args.backbone or ("resnet_small" if quick else "resnet50")
    height = args.height or (64 if quick else 256)
    width = args.width or (32 if quick else 128)
    latency_runs = args.latency_runs or (10 if quick else 40)
    throughput_runs = args.throughput_runs or (2 if quick else 6)
    batch = 16 if quick and args.batch == 64 else args.batch

    import keras

    keras.utils.set_random_seed(args.seed)
    # The normalisation is the weights' (random: torch), recorded in the config as training does;
    # the export metadata describes it.
    origin = resolve_origin(backbone, "none")
    cfg = TrainConfig().replace(
        backbone=backbone,
        backbone_weights="none",
        input_norm=origin.input_norm,
        layout=origin.layout,
        height=height,
        width=width,
    )
    teacher = build_encoder(cfg.model, (height, width, 3), name="teacher")
    files = sample_jpegs(batch, args.seed)
    pixels = tf.stack([decode_image(tf.constant(f), height, width) for f in files])

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        version_dir = export_encoder(
            teacher, cfg, os.path.join(tmp, "models", "maskpre"), warmup_batch_sizes=()
        )
        export_s = time.perf_counter() - start
        start = time.perf_counter()
        loaded = tf.saved_model.load(version_dir)
        load_s = time.perf_counter() - start
        by_pixels = loaded.signatures["embed_images"]
        by_bytes = loaded.signatures["serving_default"]
        call = tf.function(lambda x: teacher(x, training=False))
        sess, onnx_note = onnx_session(teacher, cfg, tmp)
        pixels_np = pixels.numpy()

        reference = teacher.predict(pixels, batch_size=batch, verbose=0)
        diff = max(
            np.abs(by_pixels(images=pixels)["embedding"].numpy() - reference).max(),
            np.abs(by_bytes(image_bytes=tf.constant(files))["embedding"].numpy() - reference).max(),
        )
        onnx_diff = (
            np.abs(sess.run(None, {"images": pixels_np})[0] - reference).max() if sess else None
        )

        def variants(n: int) -> dict[str, Callable[[], object]]:
            x_pix, x_bytes, x_np = pixels[:n], tf.constant(files[:n]), pixels_np[:n]
            fns = {
                "keras predict": lambda: teacher.predict(x_pix, batch_size=n, verbose=0),
                "keras call": lambda: call(x_pix).numpy(),
                "saved_model pixels": lambda: by_pixels(images=x_pix)["embedding"].numpy(),
                "saved_model jpeg": lambda: by_bytes(image_bytes=x_bytes)["embedding"].numpy(),
            }
            if sess is not None:
                fns["onnxruntime pixels"] = lambda: sess.run(None, {"images": x_np})[0]
            return fns

        latency = timings(variants(1), latency_runs)
        throughput = timings(variants(batch), throughput_runs, warmup=1)

    print(
        f"serve_bench: {backbone} {height}x{width}, embedding {reference.shape[1]}-d, "
        f"{os.cpu_count()} CPUs, TF {tf.__version__}"
    )
    print(f"export {export_s:.1f} s, load {load_s:.2f} s; max |SavedModel - Keras| = {diff:.2e}")
    if onnx_diff is None:
        print(onnx_note)
    else:
        print(f"{onnx_note}; max |onnxruntime - Keras| = {onnx_diff:.2e}")
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min)")
    base_p50 = np.median(latency["keras predict"])
    base_ips = batch / np.median(throughput["keras predict"])
    print(
        f"\n{'variant':20s} {'p50 ms':>8s} {'p95 ms':>8s} {'x predict':>10s}   "
        f"{'img/s @' + str(batch):>10s} {'x predict':>10s}"
    )
    for name in latency:
        p50 = np.median(latency[name])
        p95 = np.percentile(latency[name], 95)
        ips = batch / np.median(throughput[name])
        print(
            f"{name:20s} {1e3 * p50:8.2f} {1e3 * p95:8.2f} {base_p50 / p50:9.2f}x   "
            f"{ips:10.1f} {ips / base_ips:9.2f}x"
        )
    overhead_1 = 100 * (
        np.median(latency["saved_model jpeg"]) / np.median(latency["saved_model pixels"]) - 1
    )
    overhead_b = 100 * (
        np.median(throughput["saved_model jpeg"]) / np.median(throughput["saved_model pixels"]) - 1
    )
    print(
        f"\nJPEG-bytes path overhead over the pixel signature: {overhead_1:+.1f}% at batch 1, "
        f"{overhead_b:+.1f}% at batch {batch}"
    )
    print("(x predict > 1 means faster than Keras predict; shared CPU: compare ratios)")


if __name__ == "__main__":
    main()
