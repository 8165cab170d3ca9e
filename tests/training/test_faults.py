"""The fault-injection matrix: kill the programs at named points, break their disks and files.

Each training case kills (or disturbs) a tiny run, checks that nothing written before is lost,
re-runs the same command and requires the uninterrupted run's end: the same pseudo labels and
teacher weights within float reduction-order noise (:func:`train_runs.assert_same_end`). The
points are those of ``tests/support/scripts/fault_run.py``. A run is ~20-40 s, so most cases are
slow.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest
import tensorflow as tf
from train_runs import ROOT, assert_same_end, checkpoint_tensor, run_train, tiny_flags

FAULT_RUN = [os.path.join(ROOT, "tests", "support", "scripts", "fault_run.py")]
ITERS = 3  # steps per epoch of tiny_flags


@pytest.fixture(scope="module")
def reference(synth_market, tmp_path_factory) -> str:
    """The uninterrupted tiny run every case must end equal to."""
    out = str(tmp_path_factory.mktemp("reference"))
    proc = run_train(tiny_flags(synth_market, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def killed_at(point: str, nth: int, flags: list[str], module: str = "maskpre_tf.train"):
    """Run ``module`` with ``flags`` and SIGKILL it at the ``nth`` call of ``point``."""
    proc = run_train(flags, program=[*FAULT_RUN, point, str(nth), module])
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def epochs_in_summary(out: str) -> list[int]:
    with open(os.path.join(out, "summary_epochs.json")) as f:
        return [e["epoch"] for e in json.load(f)["epochs"]]


# (point, nth call, the checkpoint the re-run must resume from). Epoch 2 is the victim.
TRAIN_POINTS = [
    pytest.param(
        "checkpoint_write", 3, 1, id="during-checkpoint-write", marks=pytest.mark.slow
    ),  # 2 records a save
    pytest.param("extract", 2, 1, id="feature-extraction", marks=pytest.mark.slow),
    pytest.param("cluster", 2, 1, id="clustering", marks=pytest.mark.slow),
    pytest.param("step", ITERS + 2, 1, id="mid-epoch", marks=pytest.mark.slow),
    pytest.param("before_checkpoint", 2, 1, id="summary-written-checkpoint-not"),
]


@pytest.mark.parametrize("point,nth,resume_from", TRAIN_POINTS)
def test_a_killed_run_resumes_to_the_uninterrupted_end(
    reference, synth_market, tmp_path, point, nth, resume_from
):
    out = str(tmp_path / "run")
    flags = tiny_flags(synth_market, out)
    killed_at(point, nth, flags)
    ckpt = os.path.join(out, "checkpoints")
    assert tf.train.latest_checkpoint(ckpt).endswith(f"ckpt-{resume_from}")
    assert int(checkpoint_tensor(tf.train.latest_checkpoint(ckpt), "epoch")) == resume_from
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["before"]["mAP"] >= 0  # the figures before training survive
    proc = run_train(flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"ckpt-{resume_from} (epoch {resume_from} done)" in proc.stdout
    assert_same_end(reference, out)
    assert epochs_in_summary(out) == [1, 2, 3]  # a redone epoch replaces its entry


@pytest.mark.slow
def test_a_run_killed_in_source_pre_training_resumes_it(synth_market, tmp_path):
    """Source phase of 2 epochs × 3 steps, killed after its 4th step (epoch 2, step 1)."""
    source = {"source_dataset": "market1501", "source_dir": synth_market, "source_epochs": 2}
    ref = str(tmp_path / "reference")
    proc = run_train(tiny_flags(synth_market, ref, **source))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = str(tmp_path / "run")
    flags = tiny_flags(synth_market, out, **source)
    killed_at("source_step", ITERS + 1, flags)
    assert not os.path.exists(os.path.join(out, "source_pretrained.weights.h5"))
    assert tf.train.latest_checkpoint(os.path.join(out, "source_checkpoints")).endswith("ckpt-1")
    proc = run_train(flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "source pre-training: resuming after epoch 1 of 2" in proc.stdout
    assert not os.path.exists(os.path.join(out, "source_checkpoints"))  # done with them
    with open(os.path.join(out, "summary_source.json")) as f:
        assert [e["epoch"] for e in json.load(f)["epochs"]] == [1, 2]
    assert_same_end(ref, out)


# slow: ~1.5 min; the read-only folder case stays in the default suite
@pytest.mark.slow
def test_a_full_disk_stops_with_one_line_and_the_re_run_completes(
    reference, synth_market, tmp_path
):
    """A 4 MB file-size limit (RLIMIT_FSIZE; a checkpoint is ~20 MB) stands for a full disk."""
    out = str(tmp_path / "run")
    flags = tiny_flags(synth_market, out)
    limit = 4 << 20

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = run_train(flags, preexec_fn=small_disk)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "File too large" in errors[0] and "checkpoints/ckpt-1" in errors[0]
    assert "re-run the same command" in errors[0]
    assert "done in" not in proc.stdout
    assert os.path.isfile(os.path.join(out, "config.json"))
    proc = run_train(flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_end(reference, out)


@pytest.mark.slow
def test_a_training_image_deleted_mid_run_stops_with_one_line(reference, synth_market, tmp_path):
    data = str(tmp_path / "data")
    shutil.copytree(synth_market, data)
    train_dir = os.path.join(data, "bounding_box_train")
    victim = os.path.join(train_dir, sorted(os.listdir(train_dir))[5])
    kept = str(tmp_path / "kept.jpg")
    shutil.copy(victim, kept)
    out = str(tmp_path / "run")
    flags = tiny_flags(data, out)
    env = dict(os.environ, FAULT_DELETE=victim, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, *FAULT_RUN, "before_checkpoint", "1", "maskpre_tf.train", *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert os.path.basename(victim) in errors[0] and "ckpt-1" in errors[0]
    shutil.copy(kept, victim)  # the fix the message names
    proc = run_train(flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ckpt-1 (epoch 1 done)" in proc.stdout


@pytest.fixture
def read_only_dir(tmp_path):
    """An empty folder this process cannot write to: a read-only mount or an immutable folder
    as root (root ignores file modes), mode 0555 otherwise."""
    path = tmp_path / "read_only"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield str(path)
        path.chmod(0o755)
        return
    for make, undo in (
        (["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], ["umount", str(path)]),
        (["chattr", "+i", str(path)], ["chattr", "-i", str(path)]),
    ):
        if subprocess.run(make, capture_output=True).returncode == 0:
            yield str(path)
            subprocess.run(undo, check=True)
            return
    pytest.skip("as root, neither a read-only mount nor chattr +i is possible here")


def test_a_read_only_output_folder_is_one_clear_line(synth_market, read_only_dir):
    proc = run_train(tiny_flags(synth_market, read_only_dir))
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: --run_dir={read_only_dir} is not writable; pass a folder you can write to "
        "(or fix its permissions)"
    ], proc.stderr[-2000:]


@pytest.mark.slow
def test_a_killed_export_leaves_earlier_versions_and_no_half_version(reference, tmp_path):
    export_dir = str(tmp_path / "models" / "maskpre")
    flags = [f"--run_dir={reference}", f"--export_dir={export_dir}", "--warmup_batch_sizes="]
    first = run_train(flags, program=["-m", "maskpre_tf.export"])
    assert first.returncode == 0, first.stderr[-3000:]
    killed_at("export_write", 1, flags, module="maskpre_tf.export")
    names = os.listdir(export_dir)
    assert sorted(n for n in names if n.isdigit()) == ["1"]  # the served version is untouched
    assert any(n.startswith(".tmp-2-") for n in names)  # the killed one never became a version
    again = run_train(flags, program=["-m", "maskpre_tf.export"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "left by an export that was interrupted" in again.stdout
    assert sorted(os.listdir(export_dir)) == ["1", "2"]
    served = tf.saved_model.load(os.path.join(export_dir, "2"))
    assert "serving_default" in served.signatures


@pytest.mark.slow
def test_a_killed_search_cache_write_is_rebuilt(reference, synth_market, tmp_path):
    gallery = os.path.join(synth_market, "bounding_box_test")
    query = os.path.join(synth_market, "query")

    def flags(name: str) -> list[str]:
        return [
            f"--run_dir={reference}",
            f"--gallery={gallery}",
            f"--query={query}",
            f"--cache_dir={tmp_path / 'cache'}",
            f"--results_dir={tmp_path / name}",
        ]

    killed_at("search_cache_write", 1, flags("killed"), module="maskpre_tf.search")
    proc = run_train(flags("after"), program=["-m", "maskpre_tf.search"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.rmtree(tmp_path / "cache")
    clean = run_train(flags("clean"), program=["-m", "maskpre_tf.search"])
    assert clean.returncode == 0, clean.stderr[-3000:]
    with (
        open(tmp_path / "after" / "rankings.json") as a,
        open(tmp_path / "clean" / "rankings.json") as b,
    ):
        assert json.load(a) == json.load(b)
