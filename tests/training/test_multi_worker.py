"""Two worker processes on 127.0.0.1 under MultiWorkerMirroredStrategy (TF_CONFIG)."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from train_runs import ROOT, checkpoint_tensor, tiny_flags


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(data_dir: str, out: str, epochs: int, logs: list[str]) -> list:
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONUNBUFFERED="1",
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        flags = tiny_flags(data_dir, out, epochs=epochs, strategy="multi_worker")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "maskpre_tf.train", *flags],
                cwd=ROOT,
                env=env,
                stdout=open(logs[index], "w"),
                stderr=subprocess.STDOUT,
            )
        )
    return procs


def wait_all(procs, timeout: float = 400) -> list[int]:
    deadline = time.time() + timeout
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.time())))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    return codes


# slow: ~3 min; the cross-replica step's equality stays in the default suite
# (tests/training/test_training.py)
@pytest.mark.slow
def test_two_workers_train_identically_and_resume_after_a_kill(synth_market, tmp_path):
    out = str(tmp_path / "run")
    logs = [str(tmp_path / f"worker{i}.log") for i in range(2)]
    procs = start_workers(synth_market, out, epochs=2, logs=logs)
    codes = wait_all(procs)
    text = [open(path).read() for path in logs]
    assert codes == [0, 0], text[0][-3000:] + text[1][-3000:]
    # The chief writes the run; the other worker only its scratch copy.
    assert "after training: mAP" in text[0] and "after training" not in text[1]
    chief = os.path.join(out, "checkpoints", "ckpt-2")
    other = os.path.join(out, "worker_1", "checkpoints", "ckpt-2")
    np.testing.assert_array_equal(
        checkpoint_tensor(chief, "pseudo_labels"), checkpoint_tensor(other, "pseudo_labels")
    )
    chief_reader, other_reader = tf.train.load_checkpoint(chief), tf.train.load_checkpoint(other)
    keys = [
        k
        for k in chief_reader.get_variable_to_shape_map()
        if k.startswith(("model/student", "model/teacher", "model/memory")) and "OPTIMIZER" not in k
    ]
    assert len(keys) > 20 and "model/memory/table/.ATTRIBUTES/VARIABLE_VALUE" in keys
    for key in keys:
        np.testing.assert_array_equal(chief_reader.get_tensor(key), other_reader.get_tensor(key))

    # Kill worker 1 during epoch 3; the job stops; restarting both resumes from epoch 2.
    logs = [str(tmp_path / f"again{i}.log") for i in range(2)]
    procs = start_workers(synth_market, out, epochs=4, logs=logs)
    third = os.path.join(out, "checkpoints", "ckpt-3.index")
    deadline = time.time() + 300
    while not os.path.exists(third) and time.time() < deadline and procs[0].poll() is None:
        time.sleep(0.05)
    procs[1].kill()
    procs[1].wait()
    wait_all([procs[0]], timeout=60)  # the chief fails or is stopped; either way it ends
    logs = [str(tmp_path / f"resumed{i}.log") for i in range(2)]
    codes = wait_all(start_workers(synth_market, out, epochs=4, logs=logs))
    text = [open(path).read() for path in logs]
    assert codes == [0, 0], text[0][-3000:] + text[1][-3000:]
    assert all("resuming from" in t for t in text)
    assert tf.train.latest_checkpoint(os.path.join(out, "checkpoints")).endswith("ckpt-4")
