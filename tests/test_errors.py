"""User errors and storage failures become one line and exit 2; anything else is re-raised."""

from __future__ import annotations

import errno
import os

import pytest
import tensorflow as tf

from maskpre_tf.errors import EXIT_USER_ERROR, UserError, run_main, storage_problem


def test_a_full_disk_oserror_names_the_file_and_the_fix():
    err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/a/summary.json.tmp")
    message = storage_problem(err)
    assert message.startswith("could not write /runs/a/summary.json.tmp: No space left on device")
    assert "re-run the same command" in message


def test_a_tensorflow_write_failure_names_the_checkpoint_not_its_staging_file():
    err = tf.errors.OutOfRangeError(
        None,
        None,
        "{{function_node __wrapped__SaveV2_dtypes_241_device_/job:localhost/replica:0/task:0/"
        "device:CPU:0}} /runs/a/checkpoints/ckpt-1_temp/part-00000-of-"
        "00001.data-00000-of-00001.tempstate99; File too large [Op:SaveV2]",
    )
    assert storage_problem(err).startswith(
        "could not write /runs/a/checkpoints/ckpt-1: File too large"
    )


def test_other_errors_are_not_storage_problems():
    assert storage_problem(OSError(errno.ENOENT, "No such file or directory", "x")) is None
    assert storage_problem(ValueError("Permission denied")) is None  # not an OS or TF error
    assert storage_problem(tf.errors.InvalidArgumentError(None, None, "bad shape")) is None


def _raising(err: BaseException):
    def main(argv):
        raise err

    return main


def test_run_main_reports_user_and_storage_errors_with_exit_2(capsys):
    for err in (UserError("--eps=2: expected 0 < eps < 1"), OSError(errno.EROFS, "ro", "/out")):
        with pytest.raises(SystemExit) as stop:
            run_main(_raising(err), [])
        assert stop.value.code == EXIT_USER_ERROR
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")


def test_run_main_lets_a_bug_through():
    with pytest.raises(ZeroDivisionError):
        run_main(_raising(ZeroDivisionError("bug")), [])
