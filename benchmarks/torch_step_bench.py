"""The plain re-ID training step in PyTorch beside ours, same CPU, batch and input, one run.

    python benchmarks/torch_step_bench.py [--flagfile=configs/market_cpu.flags]
        [--torch_python=/path/venv/bin/python] [--steps=10] [--rounds=2]

The step, in both frameworks: RGB pixels in 0–255 → input normalisation → backbone (training
mode) → GeM pooling (trainable p) → BN neck (frozen shift) → L2 → cosine logits against one
prototype per cluster at τ → cross-entropy → Adam (L2 on the gradients) → momentum update of the
batch's prototypes. Ours is the cluster-contrast baseline's real step (``Trainer.step`` of
the protocol with MaskPre's parts and the camera memory off; it also moves the EMA teacher,
work PyTorch's side does not do). PyTorch's side is written here from the same definitions with
the reference trunks of ``tests/torch_reference_models.py`` (random weights), channels_last,
eager mode, once in float32 and once under ``torch.autocast("cpu", bfloat16)``.

Every configuration runs in a fresh process (``--torch_python`` for PyTorch's, so torch can live
in a venv of its own; install with ``pip install torch --index-url
https://download.pytorch.org/whl/cpu``); the sequence repeats ``--rounds`` times and each keeps
its best images/s. Prints each one and ours over PyTorch's (goal >= 1.0x).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import REPO, run_worker  # noqa: E402

TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


def torch_ips(
    backbone: str,
    shape: tuple[int, int, int],
    num_instances: int,
    clusters: int,
    bf16: bool,
    steps: int,
) -> float:
    """images/s of the PyTorch step; shape = (batch, height, width)."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch_reference_models import MobileNetV2Trunk, ResNet50Trunk

    torch.manual_seed(0)
    if backbone == "mobilenet_v2":
        trunk, channels = MobileNetV2Trunk(last_stride=1), 1280
    elif backbone == "resnet50":
        trunk, channels = ResNet50Trunk(last_stride=1), 2048
    else:
        raise SystemExit(f"--backbone={backbone}: PyTorch's side has mobilenet_v2 and resnet50")

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = trunk
            self.p = nn.Parameter(torch.tensor(3.0))
            self.neck = nn.BatchNorm1d(channels)
            self.neck.bias.requires_grad_(False)
            self.register_buffer("mean", 255.0 * torch.tensor(TORCH_MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", 255.0 * torch.tensor(TORCH_STD).view(1, 3, 1, 1))

        def forward(self, pixels):
            fmap = self.trunk((pixels - self.mean) / self.std).float()
            pooled = fmap.clamp(min=1e-6).pow(self.p).mean((2, 3)).pow(1.0 / self.p)
            return F.normalize(self.neck(pooled), dim=1)

    model = Encoder().to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=3.5e-4, weight_decay=5e-4
    )
    batch, height, width = shape
    generator = torch.Generator().manual_seed(0)
    pixels = (255 * torch.rand(batch, 3, height, width, generator=generator)).contiguous(
        memory_format=torch.channels_last
    )
    labels = torch.arange(batch) // num_instances
    memory = F.normalize(torch.randn(clusters, channels, generator=generator), dim=1)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            emb = model(pixels)
        loss = F.cross_entropy(emb.float() @ memory.t() / 0.05, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # the batch's clusters move towards their mean feature
            unique, slot = labels.unique(return_inverse=True)
            means = torch.zeros(len(unique), channels).index_add_(0, slot, emb.detach().float())
            rows = 0.9 * memory[unique] + 0.1 * F.normalize(means, dim=1)
            memory[unique] = F.normalize(rows, dim=1)
        return loss

    for _ in range(3):
        step().item()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()
    return batch * steps / (time.perf_counter() - start)


def ours_ips(flagfile: str | None, overrides: dict, clusters: int, steps: int) -> float:
    """images/s of our baseline step (float32, the protocol's other settings)."""
    from train_bench import PARTS_OFF, bench_config, images_per_second, step_runner, synthetic_batch

    cfg = bench_config(flagfile, overrides, "float32").replace(
        **PARTS_OFF, camera_memory=False, memory_update="mean"
    )
    run = step_runner(cfg, clusters * cfg.optim.num_instances, synthetic_batch(cfg))
    return images_per_second(run, cfg.optim.batch_size, steps)


def worker(args: argparse.Namespace) -> None:
    """Measure one configuration; its JSON result on the last line of output."""
    if args.worker == "ours":
        ips = ours_ips(args.flagfile or None, json.loads(args.overrides), args.clusters, args.steps)
    else:  # PyTorch's interpreter needs neither TensorFlow nor this package
        sys.path.insert(0, str(REPO / "tests" / "support"))
        batch, height, width, instances = (int(v) for v in args.shape.split(","))
        bf16 = args.worker == "torch_bf16"
        ips = torch_ips(
            args.arch, (batch, height, width), instances, args.clusters, bf16, args.steps
        )
    print(json.dumps({"ips": ips}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flagfile", default="", help="a protocol, e.g. configs/market_cpu.flags")
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--clusters", type=int, default=600, help="live prototypes")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--torch_python", default=sys.executable)
    parser.add_argument("--worker", choices=("ours", "torch", "torch_bf16"), help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--arch", default="", help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    from train_bench import bench_config

    overrides = {k: getattr(args, k) for k in ("backbone", "height", "width", "batch_size")}
    cfg = bench_config(args.flagfile or None, overrides, "float32")
    backbone, data, optim = cfg.model.backbone, cfg.data, cfg.optim
    common = [
        f"--flagfile={args.flagfile}",
        f"--overrides={json.dumps(overrides)}",
        f"--arch={backbone}",
        f"--shape={optim.batch_size},{data.height},{data.width},{optim.num_instances}",
        f"--clusters={args.clusters}",
        f"--steps={args.steps}",
    ]
    pythons = {"ours": sys.executable, "torch": args.torch_python, "torch_bf16": args.torch_python}
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, python in pythons.items():
            result = run_worker(__file__, [f"--worker={name}", *common], python=python)
            if result is None:
                raise SystemExit(f"the {name} step failed (its error output is above)")
            best[name] = max(best.get(name, 0.0), result["ips"])
    print(
        f"plain re-ID step, {backbone} {data.height}x{data.width}, batch {optim.batch_size}, "
        f"{args.clusters} prototypes, best of {args.rounds} rounds"
    )
    for name, label in (
        ("ours", "ours (TensorFlow, float32)"),
        ("torch", "PyTorch channels_last float32"),
        ("torch_bf16", "PyTorch channels_last bf16 autocast"),
    ):
        ratio = "" if name == "ours" else f"  ours / this = {best['ours'] / best[name]:.2f}x"
        print(f"{label:>38}: {best[name]:7.1f} img/s{ratio}")
    fastest = max(best["torch"], best["torch_bf16"])
    print(f"goal: ours >= 1.0x the faster PyTorch: {best['ours'] / fastest:.2f}x")


if __name__ == "__main__":
    main()
