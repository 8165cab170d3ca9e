"""Runs MaskPre steps on 1 replica and on 2 replicas (two logical CPUs) and compares them.

Prints one JSON line with the largest differences; ``tests/test_training.py`` runs this in a
fresh process because logical devices must be configured before TensorFlow starts. The optional
argument picks the memory: ``cluster`` (default: one prototype per cluster, mean update) or
``camera`` (per-camera proxies as well, instance updates).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))
from maskpre_tf.config import TrainConfig  # noqa: E402
from maskpre_tf.models.maskpre import build_maskpre  # noqa: E402
from maskpre_tf.training.loop import Trainer  # noqa: E402

CFG = TrainConfig().replace(
    backbone="resnet_small",
    backbone_weights="none",
    height=32,
    width=16,
    batch_size=8,
    num_instances=2,
    drop_rate=0.3,
    lr=1e-3,
    weight_decay=5e-4,
    iters=4,
    epochs=1,
)
VARIANTS = {
    "cluster": {},
    "camera": {"camera_memory": True, "memory_update": "instance"},
}
N = 16
SHAPE = (CFG.data.height, CFG.data.width, 3)
# Pseudo labels and cameras of the N training images: 5 clusters (cluster 4 is not in the batch
# below) and 3 outliers.
LABELS = np.array([0, 4, 0, 4, 1, 0, 1, -1, 2, 4, 2, -1, 3, 1, 3, -1])
CAMIDS = np.arange(N) % 3


def build(cfg, strategy, replicas):
    with strategy.scope():
        return build_maskpre(cfg, N, replicas, ramp_steps=0)


def memories(model):
    """The model's memory variables: the cluster table (and the camera proxies)."""
    tables = [model.memory.table, model.memory.num_active]
    if model.camera_memory is not None:
        tables += [model.camera_memory.table, model.camera_memory.sample_proxy]
    return tables


def replica_copies(strategy, var):
    """Every replica's copy of a variable (Keras or tf.Variable) as NumPy arrays."""
    inner = var.value if hasattr(var, "path") else var  # a Keras variable wraps a tf.Variable
    return [np.asarray(v) for v in strategy.experimental_local_results(inner)]


def main():
    variant = sys.argv[1] if len(sys.argv) > 1 else "cluster"
    cfg = CFG.replace(**VARIANTS[variant])
    rng = np.random.default_rng(0)
    index = np.arange(8, dtype=np.int64) * 2
    batch = {
        "image": rng.uniform(0, 255, (8, *SHAPE)).astype(np.float32),
        "index": index,
        "key": index + 100,
        "label": LABELS[index].astype(np.int64),  # 0, 0, 1, 1, 2, 2, 3, 3
    }
    features = rng.normal(size=(N, 256)).astype(np.float32)
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    single = build(cfg, tf.distribute.OneDeviceStrategy("/cpu:0"), 1)
    mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    double = build(cfg, mirrored_strategy, 2)
    for target in (double.student, double.teacher, double.mask_head):
        source = getattr(single, target.name if target.name != "mask_head" else "mask_head")
        target.set_weights(source.get_weights())
    for model in (single, double):
        with model.distribute_strategy.scope():
            model.reset_memories(features, LABELS, CAMIDS)
    initial = single.student.get_weights()
    initial_memory = [np.asarray(v) for v in memories(single)]
    results = {}
    for name, model in (("single", single), ("double", double)):
        trainer = Trainer(model, model.distribute_strategy, dataset, 2)
        iterator = iter(trainer.dist_dataset)
        losses = [trainer.step(iterator) for _ in range(2)]
        results[name] = {k: float(v) for k, v in losses[-1].items()}

    def max_diff(a_vars, b_vars):
        return max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(a_vars, b_vars, strict=True)
        )

    def rel_l2(a_vars, b_vars, ref_vars):
        diff = sum(
            float(np.sum((np.asarray(a) - np.asarray(b)) ** 2))
            for a, b in zip(a_vars, b_vars, strict=True)
        )
        change = sum(
            float(np.sum((np.asarray(a) - np.asarray(r)) ** 2))
            for a, r in zip(a_vars, ref_vars, strict=True)
        )
        return (diff / change) ** 0.5

    replica_spread, copies_seen = 0.0, set()
    for var in double.teacher.weights + double.student.non_trainable_weights + memories(double):
        copies = replica_copies(mirrored_strategy, var)
        copies_seen.add(len(copies))
        replica_spread = max(
            replica_spread, max(float(np.max(np.abs(c - copies[0]))) for c in copies)
        )
    report = {
        "variant": variant,
        "num_replicas": double.distribute_strategy.num_replicas_in_sync,
        "copies": sorted(copies_seen),
        "loss_single": results["single"],
        "loss_double": results["double"],
        "student_diff": max_diff(single.student.weights, double.student.weights),
        "teacher_diff": max_diff(single.teacher.weights, double.teacher.weights),
        "memory_diff": max_diff(memories(single), memories(double)),
        "memory_change": max_diff(memories(single), initial_memory),
        "student_change": max_diff(single.student.get_weights(), initial),
        "student_rel_l2": rel_l2(single.student.weights, double.student.weights, initial),
        "replica_spread": replica_spread,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
