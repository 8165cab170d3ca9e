"""The fast allocator: which library is chosen, the re-execution of every program, numerics."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from train_runs import ROOT, checkpoint_tensor, run_train, tiny_flags

from maskpre_tf import allocator

ENTRY_POINTS = [
    "maskpre_tf.train",
    "maskpre_tf.evaluate",
    "maskpre_tf.export",
    "maskpre_tf.search",
    "maskpre_tf.weights",
    "maskpre_tf.clustering.probe",
]
FOUND = allocator.choose("auto", allocator.search_dirs())


def environ_with(setting: str | None = None) -> dict[str, str]:
    """This environment without an inherited allocator choice; ``setting`` as MASKPRE_ALLOCATOR."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LD_PRELOAD", "MASKPRE_ALLOC"))}
    if setting is not None:
        env["MASKPRE_ALLOCATOR"] = setting
    return env


def fake_libraries(folder: Path, *names: str) -> list[str]:
    """Empty files named like allocator libraries (``choose`` looks at names only)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return [str(folder)]


def test_auto_prefers_tcmalloc_then_mimalloc_then_jemalloc(tmp_path: Path) -> None:
    dirs = fake_libraries(tmp_path, "libjemalloc.so.2", "libmimalloc.so.3")
    assert allocator.choose("auto", dirs) == str(tmp_path / "libmimalloc.so.3")
    fake_libraries(tmp_path, "libtcmalloc_minimal.so.4")
    assert allocator.choose("auto", dirs) == str(tmp_path / "libtcmalloc_minimal.so.4")
    assert allocator.choose("jemalloc", dirs) == str(tmp_path / "libjemalloc.so.2")
    assert allocator.choose("system", dirs) is None
    assert allocator.choose("auto", [str(tmp_path / "empty")]) is None


def test_wheels_come_before_system_copies(tmp_path: Path) -> None:
    wheel = fake_libraries(tmp_path / "wheel", "libmimalloc.so.3")
    system = fake_libraries(tmp_path / "system", "libmimalloc.so.2")
    assert allocator.choose("mimalloc", wheel + system) == str(tmp_path / "wheel/libmimalloc.so.3")


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected auto, system"):
        allocator.choose("tcmaloc", [])
    with pytest.raises(ValueError, match="no such file"):
        allocator.choose(str(tmp_path / "libnone.so"), [])
    path = fake_libraries(tmp_path, "libcustom.so")[0] + "/libcustom.so"
    assert allocator.choose(path, []) == path


def test_preloaded_library_is_recognised_and_kept_first() -> None:
    assert allocator.preloaded({"LD_PRELOAD": "/x/libasan.so /usr/lib/libtcmalloc.so.4"})
    assert allocator.preloaded({"LD_PRELOAD": "/x/libasan.so"}) is None
    env = allocator.preload_env({"LD_PRELOAD": "/x/libasan.so"}, "/y/libmimalloc.so.3")
    assert env["LD_PRELOAD"] == "/y/libmimalloc.so.3 /x/libasan.so"


def mapped_libraries(pid: int) -> str:
    """The shared objects mapped into process ``pid`` (empty once it has ended)."""
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
@pytest.mark.skipif(FOUND is None, reason="no fast allocator installed on this machine")
@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_every_program_runs_on_the_fast_allocator(module: str) -> None:
    """The program re-executes itself (same pid) with the library mapped, before TensorFlow."""
    # train loads TensorFlow in main(), after its run-lock probe: give it a command that gets there
    args = ["--data_dir=/nonexistent", "--run_dir="] if module == "maskpre_tf.train" else []
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *(args or ["--helpfull"])],
        cwd=ROOT,
        env=environ_with(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen = ""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        maps = mapped_libraries(proc.pid)
        if "tensorflow" in maps:  # TensorFlow has loaded: the allocator must be there already
            seen = maps
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert os.path.basename(FOUND) in seen


@pytest.mark.skipif(FOUND is None, reason="no fast allocator installed on this machine")
def test_system_setting_runs_without_preload() -> None:
    code = "from maskpre_tf.allocator import preload; preload(); import os; print(os.getpid())"
    for setting, expected in (("system", ""), ("auto", FOUND)):
        proc = subprocess.run(
            [sys.executable, "-c", code + "; print(os.environ.get('LD_PRELOAD', ''))"],
            env=environ_with(setting),
            capture_output=True,
            text=True,
            check=True,
        )
        assert proc.stdout.splitlines()[-1] == expected


@pytest.mark.skipif(FOUND is None, reason="no fast allocator installed on this machine")
def test_same_training_with_and_without_the_allocator(synth_market: str, tmp_path: Path) -> None:
    """Two epochs with the same seed: the same pseudo labels and weights on either allocator."""
    ends = {}
    for setting in ("system", "auto"):
        out = str(tmp_path / setting)
        flags = tiny_flags(synth_market, out, epochs=2, eval_every=0)
        proc = run_train(flags, environ=environ_with(setting))
        assert proc.returncode == 0, proc.stderr[-2000:]
        ends[setting] = os.path.join(out, "checkpoints", "ckpt-2")
    np.testing.assert_array_equal(
        checkpoint_tensor(ends["auto"], "pseudo_labels"),
        checkpoint_tensor(ends["system"], "pseudo_labels"),
    )
    import tensorflow as tf

    ref, new = (tf.train.load_checkpoint(ends[s]) for s in ("system", "auto"))
    keys = [k for k in ref.get_variable_to_shape_map() if k.startswith("model/student")]
    assert keys
    for key in keys:
        np.testing.assert_allclose(new.get_tensor(key), ref.get_tensor(key), rtol=1e-3, atol=1e-4)
