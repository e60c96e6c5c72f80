"""The run contract: roles of settings, atomic writes, the run lock, and which run directories train may write."""

import dataclasses
import json
import subprocess
import sys

import pytest

from keras_cifar import run as run_module
from keras_cifar.config import SEARCHABLE, TrainConfig, role_of, settings
from keras_cifar.errors import CheckpointError, ConfigError
from keras_cifar.run import (
    RunDir,
    RunLockedError,
    folder_lock,
    read_json,
    recover_folder,
    replace_folder,
    write_json,
)
from keras_cifar.training.rundir import prepare_run_dir


def test_every_setting_has_one_role_and_the_lists_follow_from_it():
    config = TrainConfig().to_dict()
    assert {role_of(k) for k in config} == {"experiment", "scope", "runtime", "seed", "io"}
    seeds_pooled = settings(config, without=("seed", "io"))
    assert "seed" not in seeds_pooled and "run_dir" not in seeds_pooled and "time_budget" in seeds_pooled
    assert "precision" in seeds_pooled  # a float32 run is not a seed of a bfloat16 one
    assert "lr" in SEARCHABLE and "arch" not in SEARCHABLE and "precision" not in SEARCHABLE
    assert role_of("a_setting_from_a_newer_version") == "experiment"


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().lr = 1.0


def test_write_json_replaces_whole_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"accuracy": 0.5})
    write_json(path, {"accuracy": 0.9})
    assert read_json(path) == {"accuracy": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_torn_json_file_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"config": {"arch": "res')
    with pytest.raises(CheckpointError, match="unreadable"):
        RunDir(tmp_path).read_record()
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="JSON object"):
        RunDir(tmp_path).read_record()


def test_a_second_process_is_refused_and_a_dead_holder_frees_the_lock(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"""
from keras_cifar.run import folder_lock
import sys, time
with folder_lock({str(tmp_path)!r}, "train"):
    print("locked", flush=True)
    time.sleep(60)
""",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"pid {holder.pid} \(train\)"), folder_lock(tmp_path, "train"):
            pass
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(tmp_path, "train"):  # killed with SIGKILL: no stale lock
        pass


def test_train_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a run directory"):
        prepare_run_dir(TrainConfig(run_dir=str(tmp_path)), "f1")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_train_continues_only_the_same_run_on_the_same_data(tmp_path):
    config = TrainConfig(run_dir=str(tmp_path / "run"), epochs=3)
    config, run, resumed = prepare_run_dir(config, "data-a")
    assert not resumed and run.path.is_dir()
    write_json(run.path / "config.json", {"config": config.to_dict(), "data": {"fingerprint": "data-a"}})
    _, _, resumed = prepare_run_dir(TrainConfig(run_dir=str(tmp_path / "run"), epochs=3, verbose=0), "data-a")
    assert resumed  # an io setting may change
    with pytest.raises(ConfigError, match="other data"):
        prepare_run_dir(config, "data-b")
    with pytest.raises(ConfigError, match="epochs: 3 -> 4"):
        prepare_run_dir(TrainConfig(run_dir=str(tmp_path / "run"), epochs=4), "data-a")
    (run.path / "metrics.json").write_text(json.dumps({"accuracy": 0.5}))
    with pytest.raises(ConfigError, match="finished run"):
        prepare_run_dir(config, "data-a")


def test_trim_history_drops_rows_the_backup_does_not_hold(tmp_path):
    run = RunDir(tmp_path)
    run.history_file.write_text("epoch,loss,val_accuracy\n0,2.0,0.3\n1,1.5,0.5\n2,1.2")  # row 2 torn by a kill
    assert run.trim_history(2) == 0.5
    assert run.history_file.read_text() == "epoch,loss,val_accuracy\n0,2.0,0.3\n1,1.5,0.5\n"


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_replace_folder_leaves_the_old_folder_or_the_new_one(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(run_module, "_exchange", lambda a, b: False)
    target, new = tmp_path / "export", tmp_path / ".export.partial"
    for folder, text in ((target, "old"), (new, "new")):
        folder.mkdir()
        (folder / "model.tflite").write_text(text)
    replace_folder(new, target)
    assert (target / "model.tflite").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # nothing left beside it


def test_recover_folder_puts_back_the_old_folder_after_a_kill_between_two_renames(tmp_path):
    (tmp_path / ".export.previous").mkdir()
    (tmp_path / ".export.previous" / "metadata.json").write_text("{}")
    recover_folder(tmp_path / "export")
    assert (tmp_path / "export" / "metadata.json").is_file() and not (tmp_path / ".export.previous").exists()
    recover_folder(tmp_path / "export")  # nothing to do when the folder is in place
    assert (tmp_path / "export" / "metadata.json").is_file()
