"""Files written whole or not at all (utils.files, RecordFiles.written_whole) and the class list's format."""
import os

import pytest

from data.class_list import read_class_list, write_class_list
from data.records import RecordFiles
from utils.errors import UserError
from utils.files import atomic_write, atomic_write_text, replace_together


def test_atomic_write_replaces_the_file_when_the_block_succeeds(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("old\n")
    with atomic_write(str(path)) as temporary:
        assert os.path.dirname(temporary) == str(tmp_path)  # one folder: the rename cannot cross file systems
        with open(temporary, "w") as handle:
            handle.write("new\n")
        assert path.read_text() == "old\n"  # not yet: the rename comes after the block
    assert path.read_text() == "new\n"
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_atomic_write_leaves_the_old_file_whole_when_the_block_raises(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("old\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(str(path)) as temporary:
            with open(temporary, "w") as handle:
                handle.write("half of the n")
            raise RuntimeError("disk full")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_atomic_write_text_creates_a_new_file(tmp_path):
    atomic_write_text(str(tmp_path / "new.txt"), "é\n")
    assert (tmp_path / "new.txt").read_bytes() == "é\n".encode("utf-8")
    assert os.listdir(tmp_path) == ["new.txt"]


def test_replace_together_renames_every_file_or_none(tmp_path):
    pairs = [(str(tmp_path / f"{name}.tmp"), str(tmp_path / name)) for name in ("a", "b")]
    with replace_together(pairs):
        for temporary, _ in pairs:
            open(temporary, "w").close()
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]
    os.remove(tmp_path / "a")
    os.remove(tmp_path / "b")
    with pytest.raises(RuntimeError):
        with replace_together(pairs):
            open(pairs[0][0], "w").close()  # the first is written, the block fails before the second
            raise RuntimeError
    assert os.listdir(tmp_path) == []


def test_record_files_written_whole_leave_no_partial_file_when_the_block_raises(tmp_path):
    final = RecordFiles(str(tmp_path / "set"))
    with pytest.raises(RuntimeError):
        with final.written_whole() as partial:
            assert partial.rec == str(tmp_path / "set.partial.rec")
            for path in (partial.rec, partial.idx):
                open(path, "w").close()
            raise RuntimeError
    assert os.listdir(tmp_path) == []
    with final.written_whole(("rec", "idx")) as partial:
        for path in (partial.rec, partial.idx):
            open(path, "w").close()
    assert sorted(os.listdir(tmp_path)) == ["set.idx", "set.rec"]


def test_class_list_round_trips_names_with_spaces_and_other_scripts(tmp_path):
    names = ["great white shark", "chien é", "猫", "x"]
    write_class_list(str(tmp_path / "classes.txt"), names)
    assert (tmp_path / "classes.txt").read_bytes() == "great white shark\nchien é\n猫\nx\n".encode("utf-8")
    assert read_class_list(str(tmp_path / "classes.txt")) == names


def test_class_list_absent_is_none_and_empty_is_one_line(tmp_path):
    assert read_class_list(str(tmp_path / "none.txt")) is None
    (tmp_path / "blank.txt").write_text("\n\n")
    with pytest.raises(UserError, match="class list .*blank.txt is empty; it needs one class name a line"):
        read_class_list(str(tmp_path / "blank.txt"))
