"""Tests of the RecordIO packer (data.pack), the checks of packed files (data.records) and the demo set."""
import os
import shutil

import cv2
import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from data.demo import PATTERNS, make_demo_dataset
from data.pack import main, pack_folder
from data.records import RecordFiles, check_record_files, count_records, read_class_names
from utils.errors import UserError

CLASS_SIZES = {"cat": [(24, 40), (40, 24)], "dog": [(30, 30), (20, 36), (36, 20)], "emu": [(16, 48)]}


def quiet(line):
    """A log function that drops its lines."""


def smooth_image(height, width, seed):
    """A BGR uint8 image of soft gradients, which JPEG at quality 95 keeps within a few levels."""
    random_state = np.random.RandomState(seed)
    rows = np.linspace(0.0, 1.0, height)[:, None, None]
    columns = np.linspace(0.0, 1.0, width)[None, :, None]
    start = random_state.uniform(100.0, 150.0, size=3)
    row_slope, column_slope = random_state.uniform(-50.0, 50.0, size=(2, 3))
    return np.rint(start + row_slope * rows + column_slope * columns).astype(np.uint8)


def write_class_folders(src_dir, class_sizes):
    """Write one lossless PNG per (height, width) into ``src_dir/<class>/``; return {relative path: image}."""
    images = {}
    for class_name, sizes in class_sizes.items():
        os.makedirs(src_dir / class_name, exist_ok=True)
        for number, (height, width) in enumerate(sizes):
            relative_path = f"{class_name}/image_{number}.png"
            images[relative_path] = smooth_image(height, width, seed=len(images))
            assert cv2.imwrite(str(src_dir / relative_path), images[relative_path])
    return images


def read_list(lst_path):
    """The (index, label, relative path) rows of an im2rec .lst file."""
    with open(lst_path, encoding="utf-8") as lst_file:
        return [(int(index), int(label), path)
                for index, label, path in (line.rstrip("\n").split("\t") for line in lst_file)]


def read_records(rec_path):
    """Every (header, decoded BGR image) in a .rec, in file order, read with MXNet's own reader."""
    files = RecordFiles.from_rec_path(rec_path)
    reader = mx.recordio.MXIndexedRecordIO(files.idx, files.rec, "r")
    try:
        return [mx.recordio.unpack_img(reader.read_idx(key)) for key in reader.keys]
    finally:
        reader.close()


@pytest.fixture
def src_dir(tmp_path):
    """An image folder of three classes, six images of assorted sizes."""
    src = tmp_path / "src"
    write_class_folders(src, CLASS_SIZES)
    return src


@pytest.fixture(scope="module")
def packed_set(tmp_path_factory):
    """A valid packed set, made once; tests that damage it work on copies."""
    root = tmp_path_factory.mktemp("packed")
    write_class_folders(root / "src", CLASS_SIZES)
    pack_folder(root / "src", str(root / "good"), num_workers=1, log=quiet)
    return RecordFiles(str(root / "good"))


@pytest.fixture
def packed_copy(packed_set, tmp_path):
    """A private copy of ``packed_set`` that a test may damage."""
    copy = RecordFiles(str(tmp_path / "copy"))
    shutil.copyfile(packed_set.rec, copy.rec)
    shutil.copyfile(packed_set.idx, copy.idx)
    return copy


def test_pack_round_trip_keeps_every_image_label_and_class_name(src_dir, tmp_path):
    images = {f"{name}/image_{number}.png": cv2.imread(str(src_dir / name / f"image_{number}.png"))
              for name, sizes in CLASS_SIZES.items() for number in range(len(sizes))}
    result = pack_folder(src_dir, str(tmp_path / "out"), num_workers=2, log=quiet)

    assert (result.num_images, result.num_classes, result.skipped) == (6, 3, [])
    assert result.class_names == ["cat", "dog", "emu"]
    files = RecordFiles(str(tmp_path / "out"))
    assert read_class_names(files.rec) == ["cat", "dog", "emu"]
    assert count_records(files.idx) == 6
    rows = read_list(files.lst)
    assert sorted(path for _, _, path in rows) == sorted(images)
    records = read_records(files.rec)
    assert len(records) == 6
    for (index, label, path), (header, image) in zip(rows, records):
        assert header.flag == 0 and header.id2 == 0
        assert header.id == index
        assert header.label == label == ["cat", "dog", "emu"].index(path.split("/")[0])
        assert image.shape == images[path].shape
        assert np.abs(image.astype(int) - images[path]).mean() < 1.5


def test_list_is_shuffled_by_seed_and_output_does_not_depend_on_workers(src_dir, tmp_path):
    pack_folder(src_dir, str(tmp_path / "one"), num_workers=1, seed=3, log=quiet)
    pack_folder(src_dir, str(tmp_path / "two"), num_workers=2, seed=3, log=quiet)
    pack_folder(src_dir, str(tmp_path / "other"), num_workers=1, seed=4, log=quiet)
    one, two, other = (RecordFiles(str(tmp_path / name)) for name in ("one", "two", "other"))

    with open(one.rec, "rb") as first, open(two.rec, "rb") as second:
        assert first.read() == second.read()
    assert read_list(one.lst) == read_list(two.lst)
    assert [path for _, _, path in read_list(one.lst)] != [path for _, _, path in read_list(other.lst)]
    labels = [label for _, label, _ in read_list(one.lst)]
    assert labels != sorted(labels)
    assert [index for index, _, _ in read_list(one.lst)] == list(range(6))


def test_resize_sets_the_shorter_side(tmp_path):
    src = tmp_path / "src"
    write_class_folders(src, {"only": [(40, 60), (60, 40), (10, 16)]})
    pack_folder(src, str(tmp_path / "out"), resize=20, num_workers=1, log=quiet)

    shapes = {path: image.shape for (_, _, path), (_, image) in
              zip(read_list(tmp_path / "out.lst"), read_records(str(tmp_path / "out.rec")))}
    assert shapes == {"only/image_0.png": (20, 30, 3), "only/image_1.png": (30, 20, 3),
                      "only/image_2.png": (20, 32, 3)}


def test_grayscale_alpha_and_16_bit_images_become_8_bit_bgr(tmp_path):
    src = tmp_path / "src"
    os.makedirs(src / "mixed")
    cv2.imwrite(str(src / "mixed" / "gray.png"), np.full((8, 10), 200, np.uint8))
    cv2.imwrite(str(src / "mixed" / "alpha.png"), np.dstack([np.full((8, 10, 3), (10, 100, 250), np.uint8),
                                                            np.full((8, 10), 128, np.uint8)]))
    cv2.imwrite(str(src / "mixed" / "deep.png"), np.full((8, 10, 3), 257 * 60, np.uint16))
    pack_folder(src, str(tmp_path / "out"), num_workers=1, log=quiet)

    colours = {path: image.reshape(-1, 3).mean(axis=0) for (_, _, path), (_, image) in
               zip(read_list(tmp_path / "out.lst"), read_records(str(tmp_path / "out.rec")))}
    np.testing.assert_allclose(colours["mixed/gray.png"], [200, 200, 200], atol=2)
    np.testing.assert_allclose(colours["mixed/alpha.png"], [10, 100, 250], atol=3)
    np.testing.assert_allclose(colours["mixed/deep.png"], [60, 60, 60], atol=2)


def test_unreadable_files_are_skipped_and_named(src_dir, tmp_path):
    (src_dir / "cat" / "empty.jpg").write_bytes(b"")
    (src_dir / "dog" / "notes.txt").write_text("not an image")
    (src_dir / "dog" / "broken.jpg").write_bytes(np.random.RandomState(0).bytes(500))
    (src_dir / "emu" / ".DS_Store").write_bytes(b"hidden files are not images of the data set")
    os.makedirs(src_dir / "emu" / "deeper")
    cv2.imwrite(str(src_dir / "emu" / "deeper" / "nested.png"), smooth_image(12, 12, seed=9))
    lines = []
    result = pack_folder(src_dir, str(tmp_path / "out"), num_workers=2, log=lines.append)

    assert sorted(result.skipped) == sorted([
        (str(src_dir / "cat" / "empty.jpg"), "empty file"),
        (str(src_dir / "dog" / "notes.txt"), "not a decodable image"),
        (str(src_dir / "dog" / "broken.jpg"), "not a decodable image")])
    assert result.num_images == 7
    assert "emu/deeper/nested.png" in [path for _, _, path in read_list(tmp_path / "out.lst")]
    assert lines[-1].startswith(f"packed 7 images of 3 classes into {tmp_path / 'out.rec'} "
                                "(skipped 3 unreadable files: ")
    assert sum(line.startswith("skipped ") for line in lines) == 3


def test_truncated_jpeg_that_opencv_still_decodes_is_packed_at_full_size_with_its_top_rows_intact(tmp_path):
    src = tmp_path / "src"
    os.makedirs(src / "cat")
    original = smooth_image(64, 64, seed=5)
    is_encoded, jpeg = cv2.imencode(".jpg", original, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert is_encoded
    jpeg = jpeg.tobytes()
    scan_start = jpeg.index(b"\xff\xda")  # the start-of-scan marker: the headers end, the pixels begin
    (src / "cat" / "cut.jpg").write_bytes(jpeg[:scan_start + (len(jpeg) - scan_start) // 2])
    result = pack_folder(src, str(tmp_path / "out"), num_workers=1, log=quiet)

    assert (result.num_images, result.skipped) == (1, [])
    [(_, packed)] = read_records(str(tmp_path / "out.rec"))
    assert packed.shape == (64, 64, 3)
    # The decoder stops where the data does and fills the rows below; the rows it had data for survive.
    assert np.abs(packed[:16].astype(int) - original[:16]).mean() < 2


def test_symlink_loops_html_pages_jpegs_cut_in_their_headers_and_tabs_in_names_are_skipped_with_reasons(tmp_path):
    src = tmp_path / "src"
    write_class_folders(src, {"cat": [(12, 12)], "dog": [(12, 12)]})
    is_encoded, jpeg = cv2.imencode(".jpg", smooth_image(64, 64, seed=6))
    assert is_encoded
    jpeg = jpeg.tobytes()
    (src / "cat" / "header_only.jpg").write_bytes(jpeg[:jpeg.index(b"\xff\xda")])  # headers, no pixel data
    (src / "cat" / "page.jpg").write_text("<html><body>404 Not Found</body></html>\n")
    os.symlink("b.jpg", src / "dog" / "a.jpg")
    os.symlink("a.jpg", src / "dog" / "b.jpg")
    os.symlink("gone.jpg", src / "dog" / "dangling.jpg")
    cv2.imwrite(str(src / "dog" / "tab\there.png"), smooth_image(12, 12, seed=7))
    result = pack_folder(src, str(tmp_path / "out"), num_workers=2, log=quiet)

    assert sorted(result.skipped) == [
        (str(src / "cat" / "header_only.jpg"), "not a decodable image"),
        (str(src / "cat" / "page.jpg"), "not a decodable image"),
        (str(src / "dog" / "a.jpg"), "cannot read it (Too many levels of symbolic links)"),
        (str(src / "dog" / "b.jpg"), "cannot read it (Too many levels of symbolic links)"),
        (str(src / "dog" / "dangling.jpg"), "cannot read it (No such file or directory)"),
        (str(src / "dog" / "tab\there.png"), "its name holds a tab or newline, which the .lst format cannot store")]
    assert result.num_images == 2


def test_folder_symlinks_are_named_not_followed_so_loops_end_and_file_symlinks_are_packed(tmp_path):
    src = tmp_path / "src"
    write_class_folders(src, {"cat": [(12, 12)], "dog": [(12, 12)]})
    os.symlink(".", src / "cat" / "itself")
    os.symlink("..", src / "cat" / "parent")
    os.symlink(src / "dog", src / "cat" / "dogs")
    os.symlink("image_0.png", src / "dog" / "alias.png")
    lines = []
    result = pack_folder(src, str(tmp_path / "out"), num_workers=1, log=lines.append)

    assert result.skipped == []
    assert sorted(path for _, _, path in read_list(tmp_path / "out.lst")) == [
        "cat/image_0.png", "dog/alias.png", "dog/image_0.png"]
    not_followed = sorted(line.split()[2] for line in lines if line.startswith("not followed:"))
    assert not_followed == [str(src / "cat" / name) for name in ("dogs", "itself", "parent")], lines


def test_cmyk_jpeg_is_packed_as_bgr_with_its_colour(tmp_path):
    os.makedirs(tmp_path / "src" / "red")
    Image.new("CMYK", (16, 12), (0, 255, 255, 0)).save(tmp_path / "src" / "red" / "cmyk.jpg", "JPEG")
    pack_folder(tmp_path / "src", str(tmp_path / "out"), num_workers=1, log=quiet)

    [(_, image)] = read_records(str(tmp_path / "out.rec"))
    assert image.shape == (12, 16, 3)
    np.testing.assert_allclose(image.reshape(-1, 3).mean(axis=0), [0, 0, 255], atol=3)


def test_images_smaller_than_the_crop_are_packed_as_they_are_and_enlarged_when_read(tmp_path):
    src = tmp_path / "src"
    write_class_folders(src, {"tiny": [(8, 8)]})
    pack_folder(src, str(tmp_path / "out"), num_workers=1, log=quiet)
    pack_folder(src, str(tmp_path / "resized"), resize=16, num_workers=1, log=quiet)

    [(_, kept)] = read_records(str(tmp_path / "out.rec"))
    [(_, resized)] = read_records(str(tmp_path / "resized.rec"))
    assert (kept.shape, resized.shape) == ((8, 8, 3), (16, 16, 3))
    # The training pipeline's random-resized crop scales any crop up to the input size.
    batches = mx.io.ImageRecordIter(path_imgrec=str(tmp_path / "out.rec"), path_imgidx=str(tmp_path / "out.idx"),
                                    data_shape=(3, 24, 24), batch_size=1, random_resized_crop=True,
                                    min_random_area=0.08, seed=0, preprocess_threads=1)
    assert [batch.data[0].shape for batch in batches] == [(1, 3, 24, 24)]


def test_names_with_spaces_and_non_ascii_characters_are_packed_and_listed(tmp_path):
    src = tmp_path / "src"
    os.makedirs(src / "chats é")
    cv2.imwrite(str(src / "chats é" / "chat noir é.png"), smooth_image(12, 12, seed=1))
    cv2.imwrite(str(src / "chats é" / "猫.png"), smooth_image(12, 12, seed=2))
    result = pack_folder(src, str(tmp_path / "out"), num_workers=1, log=quiet)

    assert (result.num_images, result.skipped) == (2, [])
    listed = sorted(path for _, _, path in read_list(tmp_path / "out.lst"))
    assert listed == ["chats é/chat noir é.png", "chats é/猫.png"]
    assert read_class_names(str(tmp_path / "out.rec")) == ["chats é"]


def test_file_names_that_are_not_utf8_are_packed_listed_byte_for_byte_and_logged_escaped(tmp_path):
    src = tmp_path / "src"
    write_class_folders(src, {"dog": [(12, 12)]})
    latin1_name, broken_name = os.fsdecode(b"caf\xe9.png"), os.fsdecode(b"cass\xe9.jpg")
    os.replace(src / "dog" / "image_0.png", src / "dog" / latin1_name)
    (src / "dog" / broken_name).write_bytes(b"not an image")
    lines = []
    # A log that encodes strictly, as print does on a terminal in an en_US.UTF-8 locale.
    result = pack_folder(src, str(tmp_path / "out"), num_workers=1, log=lambda line: lines.append(line.encode()))

    assert result.num_images == 1
    assert result.skipped == [(str(src / "dog" / broken_name), "not a decodable image")]
    assert (tmp_path / "out.lst").read_bytes() == b"0\t0\tdog/caf\xe9.png\n"
    assert lines[0] == f"skipped {src}/dog/cass\\xe9.jpg: not a decodable image".encode()


def test_class_folder_name_that_is_not_utf8_is_a_user_error(tmp_path):
    src = tmp_path / "src"
    write_class_folders(src, {"dog": [(12, 12)]})
    os.replace(src / "dog", src / os.fsdecode(b"chi\xe9n"))
    with pytest.raises(UserError) as error:
        pack_folder(src, str(tmp_path / "out"), num_workers=1, log=quiet)
    assert str(error.value) == (f"class folder {src}/chi\\xe9n has a name that is not UTF-8 text, which the class "
                                "list OUT_PREFIX.classes.txt must hold; rename the folder")


def make_src_without_classes(tmp_path):
    """An image folder whose images lie directly in it, with no class sub-folder."""
    os.makedirs(tmp_path / "src")
    cv2.imwrite(str(tmp_path / "src" / "loose.png"), smooth_image(8, 8, seed=0))


def make_classes_without_files(tmp_path):
    """Class folders that are empty but for hidden files."""
    os.makedirs(tmp_path / "src" / "cat")
    os.makedirs(tmp_path / "src" / "dog")
    (tmp_path / "src" / "dog" / ".hidden.png").write_bytes(b"")


def make_only_unreadable_files(tmp_path):
    """A class folder holding nothing that decodes."""
    os.makedirs(tmp_path / "src" / "cat")
    (tmp_path / "src" / "cat" / "empty.jpg").write_bytes(b"")


def make_file_as_src(tmp_path):
    """A plain file where the image folder should be."""
    (tmp_path / "src").write_text("a file, not a folder")


@pytest.mark.parametrize("make_src, out_name, options, expected", [
    (lambda tmp_path: None, "out", {}, "does not exist"),
    (make_file_as_src, "out", {}, "is not a folder"),
    (lambda tmp_path: os.makedirs(tmp_path / "src"), "out", {}, "has no class sub-folders"),
    (make_src_without_classes, "out", {}, "has no class sub-folders"),
    (make_classes_without_files, "out", {}, "hold no files"),
    (make_only_unreadable_files, "out", {}, "none of the 1 files"),
    (lambda tmp_path: write_class_folders(tmp_path / "src", {"cat": [(8, 8)]}), "missing/out", {},
     "output folder"),
    (lambda tmp_path: write_class_folders(tmp_path / "src", {"cat": [(8, 8)]}), "out.rec", {},
     "without the extension"),
    (lambda tmp_path: write_class_folders(tmp_path / "src", {"cat": [(8, 8)]}), "out", {"quality": 0},
     "--quality 0"),
    (lambda tmp_path: write_class_folders(tmp_path / "src", {"cat": [(8, 8)]}), "out", {"resize": -1},
     "--resize -1"),
], ids=["missing", "file", "empty", "no-classes", "no-files", "no-images", "no-out-folder", "rec-suffix",
        "quality", "resize"])
def test_bad_input_raises_one_line_user_error_and_leaves_no_file(
        tmp_path, make_src, out_name, options, expected):
    make_src(tmp_path)
    out_dir = tmp_path / "out_dir"
    os.makedirs(out_dir)
    with pytest.raises(UserError) as error:
        pack_folder(tmp_path / "src", str(out_dir / out_name), num_workers=1, log=quiet, **options)
    assert expected in str(error.value)
    assert "\n" not in str(error.value)
    assert os.listdir(out_dir) == []


def test_check_record_files_accepts_a_good_pack(packed_set):
    assert check_record_files(packed_set.rec, packed_set.idx) is None


def truncate(path, size):
    """Cut the file at ``path`` to ``size`` bytes."""
    with open(path, "r+b") as damaged:
        damaged.truncate(size)


def replace_last_offset(idx_path, offset):
    """Point the index's last record at ``offset``."""
    with open(idx_path, encoding="utf-8") as idx_file:
        lines = idx_file.read().splitlines()
    key, _ = lines[-1].split("\t")
    lines[-1] = f"{key}\t{offset}"
    with open(idx_path, "w", encoding="utf-8") as idx_file:
        idx_file.write("\n".join(lines) + "\n")


def overwrite_with_noise(path):
    """Replace the file's bytes by as many random ones."""
    size = os.path.getsize(path)
    with open(path, "wb") as damaged:
        damaged.write(np.random.RandomState(0).bytes(size))


@pytest.mark.parametrize("damage, expected", [
    (lambda files: os.remove(files.idx), "index file"),
    (lambda files: truncate(files.rec, 0), "is empty"),
    (lambda files: truncate(files.rec, os.path.getsize(files.rec) // 2), "points to byte"),
    (lambda files: truncate(files.rec, os.path.getsize(files.rec) - 5), "is truncated"),
    (lambda files: replace_last_offset(files.idx, 10 ** 9), "points to byte 1000000000"),
    (lambda files: replace_last_offset(files.idx, 4), "no RecordIO record at byte 4"),
    (lambda files: overwrite_with_noise(files.rec), "no RecordIO record at byte 0"),
    (lambda files: open(files.idx, "a").write("garbage line\n"), "is 'garbage line'"),
], ids=["missing-idx", "empty-rec", "half-rec", "last-record-cut", "offset-past-end", "misaligned-offset",
        "garbage-rec", "malformed-idx"])
def test_check_record_files_rejects_damage_in_one_line(packed_copy, damage, expected):
    damage(packed_copy)
    with pytest.raises(UserError) as error:
        check_record_files(packed_copy.rec, packed_copy.idx)
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_read_class_names_is_none_without_a_class_list(packed_copy):
    assert read_class_names(packed_copy.rec) is None


def test_cli_reports_bad_folder_on_one_stderr_line_with_status_2(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"error: image folder {tmp_path / 'nowhere'} does not exist; "
                            "give the folder that holds one sub-folder per class\n")
    assert captured.out == ""


def test_cli_packs_a_folder(src_dir, tmp_path, capsys):
    assert main([str(src_dir), str(tmp_path / "out"), "--resize", "12", "--num-workers", "1"]) == 0
    assert capsys.readouterr().out == f"packed 6 images of 3 classes into {tmp_path / 'out.rec'}\n"
    assert all(min(image.shape[:2]) == 12 for _, image in read_records(str(tmp_path / "out.rec")))


DEMO_SIZE = {"train_per_class": 3, "val_per_class": 2, "image_size": 32}


def test_demo_set_has_its_classes_and_counts(tmp_path):
    train_rec, val_rec = make_demo_dataset(tmp_path / "demo", seed=1, log=quiet, **DEMO_SIZE)

    class_names = [name for name, _, _ in PATTERNS]
    assert class_names == sorted(class_names) and len(class_names) == 8
    for rec_path, per_class in ((train_rec, 3), (val_rec, 2)):
        assert read_class_names(rec_path) == class_names
        records = read_records(rec_path)
        labels = [int(header.label) for header, _ in records]
        assert np.bincount(labels, minlength=8).tolist() == [per_class] * 8
        assert all(image.shape == (32, 32, 3) for _, image in records)
    assert train_rec == str(tmp_path / "demo" / "train.rec")


def test_demo_set_is_deterministic_per_seed(tmp_path):
    make_demo_dataset(tmp_path / "a", seed=1, log=quiet, **DEMO_SIZE)
    make_demo_dataset(tmp_path / "b", seed=1, log=quiet, **DEMO_SIZE)
    make_demo_dataset(tmp_path / "c", seed=2, log=quiet, **DEMO_SIZE)

    def read_bytes(root, relative_path):
        return (tmp_path / root / relative_path).read_bytes()

    for relative_path in ("images/train/checkerboard/checkerboard_00000.jpg", "images/val/rings/rings_00001.jpg",
                          "train.rec", "val.rec"):
        assert read_bytes("a", relative_path) == read_bytes("b", relative_path)
        assert read_bytes("a", relative_path) != read_bytes("c", relative_path)
    assert read_bytes("a", "images/train/plain/plain_00000.jpg") != \
        read_bytes("a", "images/val/plain/plain_00000.jpg")


def test_demo_set_is_reused_not_redrawn(tmp_path):
    first = make_demo_dataset(tmp_path / "demo", seed=1, log=quiet, **DEMO_SIZE)
    drawn = tmp_path / "demo" / "images" / "train" / "dots" / "dots_00000.jpg"
    os.remove(drawn)
    lines = []
    second = make_demo_dataset(tmp_path / "demo", seed=1, log=lines.append, **DEMO_SIZE)

    assert second == first
    assert not drawn.exists()
    assert lines == [f"demo data set in {tmp_path / 'demo'} is complete; reusing it"]


def test_demo_set_is_redrawn_when_its_parameters_change(tmp_path):
    make_demo_dataset(tmp_path / "demo", seed=1, log=quiet, **DEMO_SIZE)
    _, val_rec = make_demo_dataset(tmp_path / "demo", seed=1, log=quiet, **{**DEMO_SIZE, "val_per_class": 1})

    assert count_records(RecordFiles.from_rec_path(val_rec).idx) == 8
    assert len(os.listdir(tmp_path / "demo" / "images" / "val" / "rings")) == 1


def test_demo_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("someone else's file")
    with pytest.raises(UserError) as error:
        make_demo_dataset(tmp_path, log=quiet, **DEMO_SIZE)
    assert "is not empty and holds no demo data set" in str(error.value)
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_demo_refuses_a_file_as_its_folder(tmp_path):
    (tmp_path / "demo").write_text("not a folder")
    with pytest.raises(UserError) as error:
        make_demo_dataset(tmp_path / "demo", log=quiet, **DEMO_SIZE)
    assert str(error.value) == f"demo folder {tmp_path / 'demo'} is a file; give a new or empty folder for " \
                               "the demo data"
