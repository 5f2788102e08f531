"""RecordIO made by other tools: MXNet's own ``tools/im2rec.py``, which writes no class list beside its files.

Training counts the classes from the records' labels and names them 0..K-1 in the run's ``classes.txt``, and
``data.clean`` counts them likewise; ``eval_imagenet.py`` takes the network's classes for such a validation set.
Labels outside the classes are still caught.
"""
import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import mxnet as mx
import pytest

import eval_imagenet
import train_imagenet
from data.class_list import read_class_list
from data.clean import main as clean_main
from data.loaders import InputConfig, record_source
from data.records import RecordFiles, count_labels
from engine.config import default_logging_file
from models import get_model
from models.inference import trained_num_classes
from tests.conftest import tiny_args
from tests.test_bad_data import (NUM_RECORDS, bad_label_set, damaged_length_set, image_record, label_of,
                                 short_record_set, split_record_set, truncated_set, write_set)
from utils import checkpoint
from utils.errors import UserError

IM2REC = os.path.join(os.path.dirname(mx.__file__), "tools", "im2rec.py")
MODEL = "resnet18_v1d"  # what tiny_args trains
CONFIG = InputConfig(batch_size=4, input_size=16, crop_ratio=0.875, num_workers=1, seed=0)


def im2rec(prefix, root):
    """Pack ``root/<class>/<images>`` into ``prefix``.rec/.idx/.lst as a user would: im2rec's list, then its records."""
    for options in (["--list", "--recursive"], ["--resize", "32"]):
        subprocess.run([sys.executable, IM2REC, *options, str(prefix), str(root)], check=True, capture_output=True)
    return RecordFiles(str(prefix))


@pytest.fixture(scope="module")
def im2rec_set(tiny_set, tmp_path_factory):
    """The tiny set's image folders (blue, green, red) packed by im2rec into train and val: no class list."""
    folder = tmp_path_factory.mktemp("im2rec")
    for split in ("train", "val"):
        files = im2rec(folder / split, tiny_set / "images" / split)
        assert os.path.isfile(files.idx) and not os.path.exists(files.classes)
    return folder


@pytest.fixture(scope="module")
def trained_on_im2rec(im2rec_set, tmp_path_factory):
    """The save folder of the tiny two-epoch run (zero gamma, see tests/test_deploy.py) on im2rec's records."""
    save_dir = tmp_path_factory.mktemp("run")
    argv = tiny_args(im2rec_set, save_dir, "--last-gamma")
    assert train_imagenet.main(argv) == 0
    return save_dir


def _lst_labels(files):
    """The labels of im2rec's list, ``index<TAB>label<TAB>path`` a line."""
    with open(files.lst) as handle:
        return Counter(int(float(line.split("\t")[1])) for line in handle)


def test_labels_are_counted_from_the_record_headers(im2rec_set):
    for split, per_class in (("train", 32), ("val", 10)):
        files = RecordFiles(str(im2rec_set / split))
        counts = count_labels(files.rec, files.idx)
        assert counts == _lst_labels(files) == {0: per_class, 1: per_class, 2: per_class}


@pytest.mark.parametrize("make_set, uncounted, extra", [
    (split_record_set, [], {}),  # record 3 split in two parts: read whole
    (bad_label_set, [9, 10, 11, 12, 13], {4: 1}),  # -1, 2.5, nan and two labels left out; label 4 counted
    (truncated_set, [22, 23], {}),  # 22 runs past the end, 23 starts past it
    (short_record_set, [2], {}),  # 10 bytes: no image header
    (damaged_length_set, [], {}),  # a length field too long, but the label before it is whole
], ids=["split-record", "bad-labels", "truncated-rec", "short-record", "damaged-length"])
def test_counting_labels_leaves_out_records_without_one_whole_label(tmp_path, make_set, uncounted, extra):
    files, _ = make_set(tmp_path)
    expected = Counter(label_of(key) for key in range(NUM_RECORDS) if key not in uncounted) + Counter(extra)
    assert count_labels(files.rec, files.idx) == expected


def test_training_counts_the_classes_from_the_labels_and_writes_them_numbered(im2rec_set, trained_on_im2rec):
    save_dir = str(trained_on_im2rec)
    assert read_class_list(checkpoint.classes_path(save_dir)) == ["0", "1", "2"]
    with open(default_logging_file(save_dir)) as handle:
        log = handle.read()
    assert (f"3 classes, read from the labels of {im2rec_set / 'train.rec'} (no class list beside it); the run's "
            "classes.txt names them by their labels, 0 to 2") in log
    assert checkpoint.read_metrics(save_dir)[-1]["val_top1"] > 0.9  # the labels are im2rec's classes


def test_num_classes_still_overrides_the_labels(im2rec_set):
    lines = []
    data = record_source(str(im2rec_set / "train.rec"), str(im2rec_set / "val.rec"), CONFIG, num_classes=4,
                         log=lines.append)
    assert (data.num_classes, data.class_names) == (4, ["0", "1", "2", "3"])
    assert lines == [f"4 classes, given by --num-classes (no class list beside {im2rec_set / 'train.rec'}); the "
                     "run's classes.txt names them by their labels, 0 to 3"]


def test_a_label_that_makes_more_classes_than_records_is_refused(tmp_path):
    files, _ = write_set(tmp_path / "set", replaced={5: image_record(5, label=1e6)})
    with pytest.raises(UserError, match=r"the highest label of .*set.rec, 1000000, makes 1000001 classes, more than "
                                        r"its 24 records: a damaged label, or a subset of a larger set; pass "
                                        r"--num-classes \(records whose label"):
        record_source(files.rec, files.rec, CONFIG, log=lambda line: None)


def test_records_without_a_whole_label_say_nothing_of_the_classes(tmp_path):
    files, _ = write_set(tmp_path / "set", replaced={key: image_record(key, label=0.5) for key in range(NUM_RECORDS)})
    with pytest.raises(UserError, match="no record of .*set.rec holds a label that is a whole number >= 0"):
        record_source(files.rec, files.rec, CONFIG, log=lambda line: None)


def test_clean_counts_the_classes_from_the_labels_as_training_does(im2rec_set, tmp_path, capsys):
    rec = im2rec_set / "train.rec"
    assert clean_main([str(rec), "--out", str(tmp_path / "clean")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"3 classes, read from the labels of {rec} (no class list beside it)", f"all 96 records of {rec} are good"]
    assert not os.path.exists(tmp_path / "clean.rec")  # nothing to leave out
    # --num-classes still sets the count: the 32 records of label 2 lie outside 2 classes.
    assert clean_main([str(rec), "--num-classes", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"32 of 96 records of {rec} are bad: ") and len(lines) == 33, lines


def _eval(params, rec_val, output, *network):
    network = network or ("--model", MODEL, "--params", params)
    return eval_imagenet.main([*network, "--rec-val", str(rec_val), "--input-size", "24", "--batch-size", "16",
                               "-j", "1", "--output", str(output)])


def test_eval_takes_the_networks_classes_for_a_rec_without_a_class_list(im2rec_set, trained_on_im2rec, tmp_path,
                                                                        capsys):
    save_dir = str(trained_on_im2rec)
    params = checkpoint.params_path(save_dir, MODEL, 1)
    assert _eval(params, im2rec_set / "val.rec", tmp_path / "run.json") == 0
    assert f"No class list beside {im2rec_set / 'val.rec'}" in capsys.readouterr().out
    # Away from the run's classes.txt, the classifier's width says how many classes there are.
    shutil.copyfile(params, tmp_path / "alone.params")
    assert _eval(str(tmp_path / "alone.params"), im2rec_set / "val.rec", tmp_path / "alone.json") == 0
    prefix = checkpoint.export_prefix(save_dir, MODEL)
    assert _eval(None, im2rec_set / "val.rec", tmp_path / "export.json",
                 "--symbol", f"{prefix}-symbol.json", "--params", f"{prefix}-0000.params") == 0
    last_epoch = checkpoint.read_metrics(save_dir)[-1]
    for name in ("run", "alone", "export"):
        result = json.loads((tmp_path / f"{name}.json").read_text())
        assert (result["num_images"], result["num_classes"]) == (30, 3)
        assert result["top1_error"] == pytest.approx(1 - last_epoch["val_top1"])


def test_eval_still_names_a_label_outside_the_networks_classes(im2rec_set, trained_on_im2rec, tmp_path, capsys):
    """Labels shifted up by one: red's 3 lies outside the 3 classes of a network without classes.txt."""
    source, shifted = RecordFiles(str(im2rec_set / "val")), RecordFiles(str(tmp_path / "val"))
    reader = mx.recordio.MXIndexedRecordIO(source.idx, source.rec, "r")
    writer = mx.recordio.MXIndexedRecordIO(shifted.idx, shifted.rec, "w")
    for key in reader.keys:
        header, image = mx.recordio.unpack(reader.read_idx(key))
        writer.write_idx(key, mx.recordio.pack(header._replace(label=header.label + 1), image))
    reader.close()
    writer.close()
    shutil.copyfile(checkpoint.params_path(str(trained_on_im2rec), MODEL, 1), tmp_path / "alone.params")
    assert _eval(str(tmp_path / "alone.params"), shifted.rec, tmp_path / "result.json") == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "10 of 30 records of" in error[0] and "label 3 outside [0, 3)" in error[0], error


@pytest.mark.parametrize("name", ["resnet18_v1d", "mobilenet0.25", "mobilenetv2_0.25"])
def test_the_classifier_says_how_many_classes_a_params_file_holds(tmp_path, name):
    """Each family's classifier: ``fc.bias``, ``output.bias``, ``output.0.weight`` (a 1x1 convolution)."""
    net = get_model(name, classes=5)
    net.initialize()
    net(mx.nd.zeros((1, 3, 32, 32)))
    net.save_parameters(str(tmp_path / "net.params"))
    assert trained_num_classes(name, str(tmp_path / "net.params")) == 5


def test_eval_refuses_a_network_with_another_number_of_classes(tiny_set, tmp_path, capsys):
    net = get_model(MODEL, classes=4)
    net.initialize()
    net(mx.nd.zeros((1, 3, 24, 24)))
    net.save_parameters(str(tmp_path / "four.params"))
    assert _eval(str(tmp_path / "four.params"), tiny_set / "val.rec", tmp_path / "result.json") == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: the network has 4 outputs but the data has 3 classes; evaluate on data with the classes it was "
        "trained with"]
