"""Runs one MaskPre step on 1 replica and on 2 replicas (two logical CPUs) and compares them.

Prints one JSON line with the largest differences; ``tests/test_training.py`` runs this in a
fresh process because logical devices must be configured before TensorFlow starts.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
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
N = 16
SHAPE = (CFG.data.height, CFG.data.width, 3)


def build(strategy, replicas):
    with strategy.scope():
        return build_maskpre(CFG, N, replicas, total_steps=0)


def main():
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.uniform(0, 255, (8, *SHAPE)).astype(np.float32),
        "index": np.arange(8, dtype=np.int64) * 2,
        "label": np.repeat(np.arange(4), 2).astype(np.int64),
    }
    centroids = rng.normal(size=(5, 256)).astype(np.float32)
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    single = build(tf.distribute.OneDeviceStrategy("/cpu:0"), 1)
    mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    double = build(mirrored_strategy, 2)
    for target in (double.student, double.teacher, double.mask_head):
        source = getattr(single, target.name if target.name != "mask_head" else "mask_head")
        target.set_weights(source.get_weights())
    for model in (single, double):
        with model.distribute_strategy.scope():
            model.reset_prototypes(centroids)
    initial = single.student.get_weights()
    results = {}
    for name, model in (("single", single), ("double", double)):
        trainer = Trainer(model, model.distribute_strategy, dataset, 2, [])
        iterator = iter(trainer.dist_dataset)
        losses = [trainer._step_fn(iterator) for _ in range(2)]
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

    replica_spread = 0.0
    for var in double.teacher.weights + double.student.non_trainable_weights + [double.prototypes]:
        copies = (
            [np.asarray(v) for v in var.value.values]
            if hasattr(var.value, "values")
            else [np.asarray(var)]
        )
        replica_spread = max(
            replica_spread, max(float(np.max(np.abs(c - copies[0]))) for c in copies)
        )
    report = {
        "num_replicas": double.distribute_strategy.num_replicas_in_sync,
        "loss_single": results["single"],
        "loss_double": results["double"],
        "student_diff": max_diff(single.student.weights, double.student.weights),
        "teacher_diff": max_diff(single.teacher.weights, double.teacher.weights),
        "prototype_diff": max_diff([single.prototypes], [double.prototypes]),
        "student_change": max_diff(single.student.get_weights(), initial),
        "student_rel_l2": rel_l2(single.student.weights, double.student.weights, initial),
        "replica_spread": replica_spread,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
