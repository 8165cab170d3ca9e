"""A run's record survives what a user can type: bad resumes, a second process, a stale lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from train_runs import ROOT, run_train, tiny_flags

from maskpre_tf import runs
from maskpre_tf.config import TrainConfig
from maskpre_tf.errors import EXIT_USER_ERROR, UserError
from maskpre_tf.run_lock import LOCK_FILE, RunLock

HOLD = """
import sys, time
from maskpre_tf.run_lock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def snapshot(run_dir: str) -> dict[str, bytes]:
    """Every file of a run folder but the logs, as bytes (what a refused command must not touch)."""
    files = {}
    for folder, _, names in os.walk(run_dir):
        for name in names:
            path = os.path.join(folder, name)
            if "/logs" not in path:
                with open(path, "rb") as f:
                    files[os.path.relpath(path, run_dir)] = f.read()
    return files


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == EXIT_USER_ERROR, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "Value in checkpoint" not in proc.stdout + proc.stderr  # no TensorFlow warning
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def trained(synth_market, tmp_path_factory) -> tuple[str, list[str]]:
    """A finished 2-epoch tiny run and its flags."""
    run_dir = str(tmp_path_factory.mktemp("trained") / "run")
    flags = tiny_flags(synth_market, run_dir, epochs=2, eval_every=0)
    proc = run_train(flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, flags


def test_a_mistyped_resume_is_refused_before_it_writes_and_the_run_stays_usable(trained):
    run_dir, flags = trained
    before = snapshot(run_dir)
    proc = run_train([*flags, "--backbone=mobilenet_v2", "--height=128"])
    line = one_error_line(proc)
    assert "--backbone: run has 'resnet_small', you passed 'mobilenet_v2'" in line
    assert "--height: run has 64, you passed 128" in line
    assert f"--flagfile={os.path.join(run_dir, runs.FLAGS_FILE)}" in line and "--run_dir" in line
    assert snapshot(run_dir) == before  # nothing written, config.json included
    evaluate = subprocess.run(
        [sys.executable, "-m", "maskpre_tf.evaluate", f"--run_dir={run_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert evaluate.returncode == 0, evaluate.stderr[-2000:]
    assert "mAP" in evaluate.stdout


def test_the_runs_own_flagfile_resumes_it(trained):
    run_dir, _ = trained
    proc = run_train([f"--flagfile={os.path.join(run_dir, runs.FLAGS_FILE)}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "all 2 epochs are done" in proc.stdout


def test_a_schedule_change_resumes_and_is_recorded_with_its_epoch(synth_market, tmp_path):
    run_dir = str(tmp_path / "run")
    flags = tiny_flags(synth_market, run_dir, epochs=1, eval_every=0)
    assert run_train(flags).returncode == 0
    proc = run_train([*flags, "--epochs=2", "--lr=1e-4"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "at epoch 2 with changed settings: epochs, lr" in proc.stdout
    with open(os.path.join(run_dir, runs.CONFIG_FILE)) as f:
        record = json.load(f)
    assert record["original"]["optim"]["epochs"] == 1
    assert record["config"]["optim"]["epochs"] == 2
    assert record["history"] == [
        {"from_epoch": 2, "changed": {"epochs": [1, 2], "lr": [3.5e-4, 1e-4]}}
    ]


def test_a_record_that_does_not_fit_the_weights_is_one_line_for_every_reader(trained, tmp_path):
    run_dir, _ = trained
    copy = str(tmp_path / "copy")
    subprocess.run(["cp", "-r", run_dir, copy], check=True)
    path = os.path.join(copy, runs.CONFIG_FILE)
    with open(path) as f:
        record = json.load(f)
    record["config"]["model"]["backbone"] = "mobilenet_v2"  # edited by hand
    with open(path, "w") as f:
        json.dump(record, f)
    with pytest.raises(UserError, match="does not fit the model .*--backbone=mobilenet_v2"):
        runs.load_encoder(copy)
    with pytest.raises(UserError, match="does not fit the model"):
        runs.load_encoder(copy, network="student")  # from the checkpoint's branch


def test_a_second_process_is_refused_at_once_and_writes_nothing(trained):
    run_dir, flags = trained
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, run_dir], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run_dir)
        start = time.monotonic()
        proc = run_train(flags)
        seconds = time.monotonic() - start
        line = one_error_line(proc)
        assert f"pid {holder.pid} on " in line and "another --run_dir" in line
        assert snapshot(run_dir) == before
        assert seconds < 5  # refused before TensorFlow loads: the interpreter and the flags only
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path):
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, LOCK_FILE), "w") as f:  # left by a process that died
        json.dump({"pid": 999999, "host": "gone", "started": "2026-01-01T00:00:00+00:00"}, f)
    notes: list[str] = []
    with RunLock(run_dir, log=notes.append):
        assert notes == [
            f"note: took over the lock of {run_dir} from pid 999999 on gone since "
            "2026-01-01T00:00:00+00:00, gone"
        ]
        with open(os.path.join(run_dir, LOCK_FILE)) as f:
            assert json.load(f)["pid"] == os.getpid()
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):  # a second holder, here
            RunLock(run_dir).acquire()
    with RunLock(run_dir, log=notes.append):  # released: taken again without a note
        pass
    assert len(notes) == 1


def test_resume_conflicts_name_only_the_settings_that_define_the_model():
    recorded = TrainConfig().replace(backbone="resnet_small", epochs=10, camera_memory=True)
    requested = recorded.replace(epochs=20, lr=1e-4, eps="auto", camera_memory=False)
    assert runs.resume_conflicts(recorded, requested) == [
        "--camera_memory: run has True, you passed False"
    ]
