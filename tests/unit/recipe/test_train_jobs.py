"""train_jobs: every training in its own forked child; failures name the job and its log."""

from __future__ import annotations

import logging

import pytest

from espnet_delta.recipe import train_jobs


def test_missing_config_fails_before_any_training(tmp_path, caplog):
    done = tmp_path / "done_job"
    done.mkdir()
    (done / train_jobs.DONE).write_text("1.0 s\n")
    missing = tmp_path / "not_rendered"
    missing.mkdir()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as e:
        train_jobs.main([str(done), str(missing)])
    assert e.value.code == 1
    assert str(missing / "train.yaml") in caplog.text
    assert str(done / "train.yaml") not in caplog.text  # a finished job needs no config


def test_finished_jobs_are_skipped(tmp_path, caplog):
    job = tmp_path / "job"
    job.mkdir()
    (job / train_jobs.DONE).write_text("1.0 s\n")
    with caplog.at_level(logging.INFO):
        train_jobs.main([str(job)])
    assert "already trained" in caplog.text
    assert not (job / "train.log").exists()


def test_a_failing_forked_job_stops_the_stage_and_names_its_log(tmp_path, caplog):
    bad, never = tmp_path / "bad", tmp_path / "never"
    for job in (bad, never):
        job.mkdir()
        (job / "train.yaml").write_text("no_such_espnet_option: 1\n")
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as e:
        train_jobs.main([str(bad), str(never)])
    assert e.value.code == 1
    assert f"{bad}: training failed" in caplog.text and str(bad / "train.log") in caplog.text
    assert not (bad / train_jobs.DONE).exists()
    assert not (never / "train.log").exists()  # the stage stopped at the first failure


def test_a_killed_training_is_named_as_killed_with_the_memory_hint():
    """A training process ended by SIGKILL (what the kernel's OOM killer sends) is reported as killed,
    with the out-of-memory hint; another signal by its name; a plain failure by its status only."""
    import multiprocessing
    import os
    import signal

    from espnet_delta.recipe.train_jobs import exit_reason

    child = multiprocessing.get_context("fork").Process(target=lambda: os.kill(os.getpid(), signal.SIGKILL))
    child.start()
    child.join()
    assert child.exitcode == -9
    reason = exit_reason(child.exitcode)
    assert reason.startswith("exit status -9, killed by SIGKILL") and "out of memory?" in reason
    assert exit_reason(-15) == "exit status -15, killed by SIGTERM"
    assert exit_reason(1) == "exit status 1"
