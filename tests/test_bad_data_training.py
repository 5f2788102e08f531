"""What the trainer does with bad records: stop naming the record, or skip and count it (--skip-bad-records)."""
import os
import pathlib
import re
import shutil

import pytest

import train_imagenet
from data.clean import main as clean_main
from data.loaders import InputConfig, record_source
from tests.conftest import ONE_EPOCH, tiny_args
from tests.helpers import copy_packed_set, disk_with_free_bytes, trainer_error_line
from utils import checkpoint
from utils.errors import UserError


def _copy_with(tiny_set, folder, split, replacements):
    """Copy ``tiny_set``'s packed splits into ``folder``, with ``{key: (label, image or None: kept)}`` in ``split``."""
    def rewrite(name, key, header, image):
        if name == split and key in replacements:
            label, replacement = replacements[key]
            return header._replace(label=float(label)), replacement or image
        return header, image

    return copy_packed_set(tiny_set, folder, rewrite)


def _args(folder, save_dir, *extra):
    return tiny_args(pathlib.Path(folder), save_dir, *ONE_EPOCH, *extra)


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


NOT_AN_IMAGE = (0, b"\xff\xd8\xff\xe0 this is not a JPEG body" * 4)


def test_an_undecodable_training_image_stops_the_run_naming_it(tiny_set, tmp_path, capsys):
    """The training reader names the record as it meets it: its key, byte offset, file and why."""
    folder = _copy_with(tiny_set, str(tmp_path / "data"), "train", {7: NOT_AN_IMAGE})
    assert train_imagenet.main(_args(folder, tmp_path / "run")) == 2
    line = _one_error_line(capsys)
    assert re.search(r"record key 7 at byte \d+ of \S*/data/train.rec: its image bytes do not decode; ", line), line
    assert "--skip-bad-records" in line


def test_an_undecodable_image_file_stops_a_folder_run_naming_it(tiny_set, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(tiny_set / "images", images)
    bad = images / "train" / "red" / "7.png"
    bad.write_bytes(NOT_AN_IMAGE[1])
    argv = [a for a in _args(tiny_set, tmp_path / "run") if not a.endswith(".rec")]
    argv = [a for a in argv if a not in ("--rec-train", "--rec-val")] + ["--data-dir", str(images)]
    assert trainer_error_line(capsys, argv) == (
        f"error: image file {bad} does not decode; remove it, or pack the folder with `python -m data.pack`, "
        "which names and skips the files it cannot read")
    assert bad.read_bytes() == NOT_AN_IMAGE[1]


def test_skip_bad_records_trains_on_the_rest_and_counts_them(tiny_set, tmp_path):
    folder = _copy_with(tiny_set, str(tmp_path / "data"), "train", {7: NOT_AN_IMAGE, 8: (3, None), 9: (-1, None)})
    save_dir = tmp_path / "run"
    assert train_imagenet.main(_args(folder, save_dir, "--skip-bad-records")) == 0
    [record] = checkpoint.read_metrics(str(save_dir))
    assert record["skipped_records"] == 3
    log = (save_dir / "train.log").read_text()
    assert "3 of 96 records of" in log and "label 3 outside [0, 3)" in log and "93 good records" in log, log
    assert os.path.exists(save_dir / "clean" / "train.rec") and not os.path.exists(save_dir / "clean" / "val.rec")


def test_skip_bad_records_refuses_a_copy_that_does_not_fit_before_writing_it(tiny_set, tmp_path, capsys, monkeypatch):
    folder = _copy_with(tiny_set, str(tmp_path / "data"), "train", {7: NOT_AN_IMAGE})
    save_dir = tmp_path / "run"
    disk_with_free_bytes(monkeypatch, 1000)
    assert train_imagenet.main(_args(folder, save_dir, "--skip-bad-records")) == 2
    line = _one_error_line(capsys)
    assert re.fullmatch(
        rf"error: the copy of the 95 good records of {re.escape(folder)}/train.rec needs [\d,]+ bytes \([\d.]+ kB\) "
        rf"in {re.escape(str(save_dir))}/clean, which has 1,000 bytes \(1.0 kB\) free; make room there, or write "
        r"the copy to another disk \(`python -m data.clean --out`, or --save-dir with --skip-bad-records\)", line), line
    assert os.listdir(save_dir / "clean") == []
    assert not (save_dir / "metrics.jsonl").exists()


def test_clean_command_refuses_a_copy_that_does_not_fit(tiny_set, tmp_path, capsys, monkeypatch):
    folder = _copy_with(tiny_set, str(tmp_path / "data"), "train", {4: NOT_AN_IMAGE})
    disk_with_free_bytes(monkeypatch, 1000)
    assert clean_main([os.path.join(folder, "train.rec"), "--out", str(tmp_path / "clean")]) == 2
    assert re.fullmatch(r"error: the copy of the 95 good records of \S+/train.rec needs [\d,]+ bytes \([\d.]+ kB\) "
                        rf"in {re.escape(str(tmp_path))}, which has 1,000 bytes \(1.0 kB\) free; .*",
                        _one_error_line(capsys))
    assert sorted(os.listdir(tmp_path)) == ["data"]


def test_a_resumed_run_reuses_the_clean_copy_until_the_source_changes(tiny_set, tmp_path):
    folder = _copy_with(tiny_set, str(tmp_path / "data"), "train", {7: NOT_AN_IMAGE})
    save_dir = tmp_path / "run"
    assert train_imagenet.main(_args(folder, save_dir, "--skip-bad-records", "--num-epochs", "2",
                                     "--save-frequency", "1")) == 0
    shutil.rmtree(save_dir / "checkpoints" / "epoch-0001")
    assert train_imagenet.main(_args(folder, save_dir, "--skip-bad-records", "--num-epochs", "2", "--resume")) == 0
    assert "Reusing" in (save_dir / "train.log").read_text()
    assert [record["skipped_records"] for record in checkpoint.read_metrics(str(save_dir))] == [1, 1]


def test_a_label_outside_the_classes_is_named(tiny_set, tmp_path, capsys):
    folder = _copy_with(tiny_set, str(tmp_path / "data"), "train", {5: (3, None)})
    assert train_imagenet.main(_args(folder, tmp_path / "run")) == 2
    line = _one_error_line(capsys)
    assert "label 3 is outside [0, 3)" in line and "key 5 at byte" in line and "label 3 outside [0, 3)" in line, line


def test_an_undecodable_validation_image_is_named_before_training(tiny_set, tmp_path, capsys):
    """MXNet's validation iterator would kill the process (SIGFPE) on it; the scan names it first."""
    folder = _copy_with(tiny_set, str(tmp_path / "data"), "val", {2: NOT_AN_IMAGE})
    assert train_imagenet.main(_args(folder, tmp_path / "run")) == 2
    line = _one_error_line(capsys)
    assert "records of" in line and "val.rec are bad: key 2 at byte" in line, line
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_truncated_record_file_is_one_line(tiny_set, tmp_path, capsys):
    folder = _copy_with(tiny_set, str(tmp_path / "data"), "train", {})
    rec = os.path.join(folder, "train.rec")
    with open(rec, "r+b") as handle:
        handle.truncate(os.path.getsize(rec) - 100)
    assert train_imagenet.main(_args(folder, tmp_path / "run")) == 2
    line = _one_error_line(capsys)
    assert "train.rec" in line and "truncated" in line, line


def test_an_index_of_another_file_is_one_line(tiny_set, tmp_path, capsys):
    folder = _copy_with(tiny_set, str(tmp_path / "data"), "train", {})
    shutil.copyfile(str(tiny_set / "val.idx"), os.path.join(folder, "train.idx"))
    assert train_imagenet.main(_args(folder, tmp_path / "run")) == 2
    line = _one_error_line(capsys)
    assert "train.rec" in line and ("does not match" in line or "no RecordIO record" in line), line


def test_an_empty_shard_is_refused(tiny_set):
    config = InputConfig(batch_size=8, input_size=16, crop_ratio=0.875, num_workers=1, seed=0, num_parts=200,
                         part_index=3)
    with pytest.raises(UserError, match="has 96 records, too few for a shard of each of 200 workers"):
        record_source(str(tiny_set / "train.rec"), str(tiny_set / "val.rec"), config)


def test_clean_command_lists_bad_records_and_writes_a_copy(tiny_set, tmp_path, capsys):
    folder = _copy_with(tiny_set, str(tmp_path / "data"), "train", {4: NOT_AN_IMAGE})
    assert clean_main([os.path.join(folder, "train.rec"), "--out", str(tmp_path / "clean")]) == 0
    out = capsys.readouterr().out
    assert "1 of 96 records" in out and "key 4\tbyte" in out and "wrote the 95 good records" in out, out
    assert len(open(tmp_path / "clean.idx").read().splitlines()) == 95
