"""Tests of maskpre_tf.models.replicated: inference split over a worker's devices."""

from __future__ import annotations

import pytest
from two_cpus import run_on_two_cpus


@pytest.mark.slow
def test_spread_over_two_replicas_equals_one_device(tmp_path):
    run_on_two_cpus(
        tmp_path,
        "spread",
        """
        import keras
        from maskpre_tf.models.replicated import spread_over_replicas
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = keras.Sequential(
                [keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D()]
            )
            model.build((None, 8, 6, 3))
        replicas = set()
        def embed(x):
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            replicas.add(int(tf.get_static_value(replica)))
            return model(x, training=False)
        spread = spread_over_replicas(strategy, embed)
        rng = np.random.default_rng(0)
        for count in (1, 5, 8):  # 5: the last replica's slice is padded
            x = rng.normal(size=(count, 8, 6, 3)).astype(np.float32)
            got = spread(tf.constant(x)).numpy()
            assert got.shape == (count, 4), got.shape
            np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-6)
        assert len(replicas) == 2, replicas  # traced once per replica
        single = spread_over_replicas(tf.distribute.get_strategy(), embed)
        np.testing.assert_allclose(single(tf.constant(x)).numpy(), model(x).numpy(), rtol=1e-6)
        print("OK")
        """,
    )
