"""A built-in demo data set, drawn procedurally, so that training can be tried without downloading ImageNet.

Eight classes of patterns that fill the whole image (checkerboard, diagonal stripes, dots, grid, horizontal
stripes, plain, rings, vertical stripes), each drawn in a random colour, period, phase and small rotation
over a background of another random colour with a gentle gradient and pixel noise. A network has to learn
texture and orientation, not colour, to tell them apart. Patterns fill the image, rather than being shapes
placed in it, because the paper's random crops keep as little as 8% of the image: a shape is often cropped
away, a texture never is (a ResNet-18 with SGD barely left chance level in eight epochs on placed shapes).
The images are written as JPEGs in ImageNet's folder layout and packed with
``data.pack``, so the demo exercises the same input pipeline as the real thing.
"""
import json
import os
import shutil

import cv2
import numpy as np

from data.pack import pack_folder
from data.records import RecordFiles, check_record_files
from utils.errors import UserError
from utils.files import atomic_write_text

# Bump when the drawing changes, so that sets drawn by an older version are redrawn, not reused.
GENERATOR_VERSION = 2
MARKER_NAME = "demo.json"  # written last: its presence with "complete" means the set is whole
SUPERSAMPLING = 4  # patterns are drawn at 4x the size and box-averaged down, which anti-aliases their edges
MIN_COLOUR_DISTANCE = 100.0  # Euclidean RGB distance between pattern and background, so patterns stay visible
JPEG_QUALITY = 95
SPLITS = (("train", 0), ("val", 1))  # split name and the stream number that keeps its random draws apart


def make_demo_dataset(root, train_per_class=500, val_per_class=100, image_size=32, seed=0, log=print):
    """Draw the demo set under ``root`` and pack it; return ``(train_rec_path, val_rec_path)``.

    Writes ``root/images/{train,val}/<class>/*.jpg``, ``root/{train,val}.rec/.idx/.lst/.classes.txt``
    and, last, the marker ``root/demo.json`` holding the generator version and parameters. If the
    marker shows a complete set drawn with the same parameters and its record files pass
    ``check_record_files``, nothing is redrawn. The same ``seed`` gives the same bytes. ``root`` must be
    new, empty, or a folder this function wrote before; anything else raises UserError.
    """
    root = os.fspath(root)
    _check_demo_options(train_per_class, val_per_class, image_size)
    params = {"version": GENERATOR_VERSION, "train_per_class": train_per_class,
              "val_per_class": val_per_class, "image_size": image_size, "seed": seed}
    record_files = {split: RecordFiles(os.path.join(root, split)) for split, _ in SPLITS}
    rec_paths = (record_files["train"].rec, record_files["val"].rec)
    if os.path.exists(root) and not os.path.isdir(root):
        raise UserError(f"demo folder {root} is a file; give a new or empty folder for the demo data")
    marker = _read_marker(root)
    if marker == {**params, "complete": True} and _records_are_whole(record_files.values()):
        log(f"demo data set in {root} is complete; reusing it")
        return rec_paths
    if marker is None and os.path.isdir(root) and os.listdir(root):
        raise UserError(f"{root} is not empty and holds no demo data set ({MARKER_NAME} is missing); "
                        f"give a new or empty folder for the demo data")
    if marker is not None:
        log(f"demo data set in {root} is incomplete or was drawn with other parameters; drawing it again")

    os.makedirs(root, exist_ok=True)
    # An interrupted run leaves this incomplete marker behind, which lets the next run claim the folder.
    _write_marker(root, {**params, "complete": False})
    images_root = os.path.join(root, "images")
    shutil.rmtree(images_root, ignore_errors=True)
    per_class = {"train": train_per_class, "val": val_per_class}
    for split, stream in SPLITS:
        split_dir = os.path.join(images_root, split)
        log(f"drawing {per_class[split]} {split} images of each of {len(PATTERNS)} classes into {split_dir}")
        draw_split(split_dir, per_class[split], image_size, np.random.RandomState([seed, stream]))
        pack_folder(split_dir, record_files[split].prefix, quality=JPEG_QUALITY, seed=seed, log=log)
    _write_marker(root, {**params, "complete": True})
    return rec_paths


def draw_split(split_dir, per_class, image_size, random_state):
    """Write ``per_class`` JPEGs of each class into ``split_dir/<class>/``, drawing from ``random_state``."""
    grid = _pixel_grid(image_size * SUPERSAMPLING)
    for class_name, draw_mask, max_rotation in PATTERNS:
        class_dir = os.path.join(split_dir, class_name)
        os.makedirs(class_dir, exist_ok=True)
        for index in range(per_class):
            image = draw_image(draw_mask, max_rotation, grid, image_size, random_state)
            cv2.imwrite(os.path.join(class_dir, f"{class_name}_{index:05d}.jpg"), image,
                        [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])


def draw_image(draw_mask, max_rotation, grid, image_size, random_state):
    """Draw a square BGR uint8 image of side ``image_size``: a ``draw_mask`` pattern over a noisy gradient.

    The pattern is rotated by up to ``max_rotation`` degrees either way. ``grid`` holds the (y, x)
    coordinates of the supersampled canvas, in supersampled pixels.
    """
    canvas_size = image_size * SUPERSAMPLING
    pattern_colour, background_colour = _contrasting_colours(random_state)
    centre = random_state.uniform(-0.5, 1.5, size=2) * canvas_size
    angle = np.deg2rad(random_state.uniform(-max_rotation, max_rotation))
    along, across = _rotated_coordinates(grid, centre, angle)
    mask = draw_mask(along, across, canvas_size, random_state)

    # The share of each output pixel that the shape covers, the mean of its block of the supersampled
    # mask: edge pixels get intermediate values, which anti-aliases the pattern.
    blocks = mask.astype(np.float32).reshape(image_size, SUPERSAMPLING, image_size, SUPERSAMPLING)
    coverage = blocks.sum(axis=(1, 3)) / SUPERSAMPLING ** 2

    gradient_angle = random_state.uniform(0.0, 2 * np.pi)
    position = (np.arange(image_size) + 0.5) / image_size - 0.5
    gradient = np.cos(gradient_angle) * position[None, :] + np.sin(gradient_angle) * position[:, None]
    background = background_colour + random_state.uniform(0.0, 40.0) * gradient[..., None]
    image = coverage[..., None] * pattern_colour + (1.0 - coverage[..., None]) * background
    image += random_state.normal(0.0, random_state.uniform(2.0, 10.0), size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _horizontal_stripes(along, across, canvas_size, random_state):
    """Horizontal bands."""
    return _bands(across, canvas_size, random_state)


def _vertical_stripes(along, across, canvas_size, random_state):
    """Vertical bands."""
    return _bands(along, canvas_size, random_state)


def _diagonal_stripes(along, across, canvas_size, random_state):
    """Bands at 45 degrees either way (a horizontal flip turns one diagonal into the other)."""
    direction = random_state.choice((-1.0, 1.0))
    return _bands((along + direction * across) / np.sqrt(2), canvas_size, random_state)


def _checkerboard(along, across, canvas_size, random_state):
    """Squares of alternating colour."""
    cell = _period(canvas_size, random_state) / 2
    return (np.floor(along / cell) + np.floor(across / cell)) % 2 == 0


def _dots(along, across, canvas_size, random_state):
    """A grid of discs."""
    period = _period(canvas_size, random_state)
    radius = period * random_state.uniform(0.25, 0.35)
    offset_along, offset_across = along % period - period / 2, across % period - period / 2
    return offset_along ** 2 + offset_across ** 2 <= radius ** 2


def _grid(along, across, canvas_size, random_state):
    """Thin lines in both directions, like graph paper."""
    period = _period(canvas_size, random_state)
    width = period * random_state.uniform(0.2, 0.3)
    return (along % period < width) | (across % period < width)


def _rings(along, across, canvas_size, random_state):
    """Concentric rings around a point that may lie outside the image."""
    return _bands(np.sqrt(along ** 2 + across ** 2), canvas_size, random_state)


def _plain(along, across, canvas_size, random_state):
    """No pattern: only the background's gradient and noise."""
    return np.zeros(along.shape, dtype=bool)


def _period(canvas_size, random_state):
    """One light and one dark band span 15-25% of the image: still several periods in a small random crop."""
    return random_state.uniform(0.15, 0.25) * canvas_size


def _bands(coordinate, canvas_size, random_state):
    """True on every other band of ``coordinate``, at a random period and phase."""
    period = _period(canvas_size, random_state)
    return np.floor((coordinate + random_state.uniform(0.0, period)) / (period / 2)) % 2 == 0


# (class name, pattern drawer, largest rotation in degrees either way). Sorted by name, so that a class's
# label (its folder's place in sorted order) is its index here. Oriented patterns tilt by 10 degrees only,
# so that horizontal, vertical and diagonal stripes stay different classes.
PATTERNS = (
    ("checkerboard", _checkerboard, 10.0),
    ("diagonal_stripes", _diagonal_stripes, 10.0),
    ("dots", _dots, 45.0),
    ("grid", _grid, 10.0),
    ("horizontal_stripes", _horizontal_stripes, 10.0),
    ("plain", _plain, 0.0),
    ("rings", _rings, 0.0),
    ("vertical_stripes", _vertical_stripes, 10.0),
)


def _pixel_grid(canvas_size):
    """The (y, x) coordinates of the centres of a square canvas's pixels."""
    return np.mgrid[0:canvas_size, 0:canvas_size].astype(np.float32) + 0.5


def _rotated_coordinates(grid, centre, angle):
    """Offsets of each pixel from ``centre`` in a frame rotated by ``angle``: (along, across)."""
    delta_y, delta_x = grid[0] - centre[0], grid[1] - centre[1]
    along = np.cos(angle) * delta_x + np.sin(angle) * delta_y
    across = -np.sin(angle) * delta_x + np.cos(angle) * delta_y
    return along, across


def _contrasting_colours(random_state):
    """Two random colours at least MIN_COLOUR_DISTANCE apart: (pattern, background)."""
    while True:
        pattern_colour, background_colour = random_state.uniform(0.0, 255.0, size=(2, 3))
        if np.linalg.norm(pattern_colour - background_colour) >= MIN_COLOUR_DISTANCE:
            return pattern_colour, background_colour


def _check_demo_options(train_per_class, val_per_class, image_size):
    """Raise UserError for image counts below 1 or an image too small to draw the patterns in."""
    if train_per_class < 1 or val_per_class < 1:
        raise UserError(f"the demo needs at least 1 image per class in each split, got train "
                        f"{train_per_class} and val {val_per_class}")
    if image_size < 16:
        raise UserError(f"demo image size {image_size} is below 16 pixels; stripes and rings need 16 or more")


def _records_are_whole(record_files):
    """True if every set of record files passes ``check_record_files``."""
    try:
        for files in record_files:
            check_record_files(files.rec, files.idx)
    except UserError:
        return False
    return True


def _read_marker(root):
    """The contents of ``root``'s marker, or None if there is none or it is not one this module wrote."""
    try:
        with open(os.path.join(root, MARKER_NAME), encoding="utf-8") as marker_file:
            marker = json.load(marker_file)
    except (OSError, ValueError):
        return None
    is_ours = isinstance(marker, dict) and {"version", "complete"} <= marker.keys()
    return marker if is_ours else None


def _write_marker(root, contents):
    """Write the marker atomically: a crash leaves the previous marker or the new one, never half a file."""
    atomic_write_text(os.path.join(root, MARKER_NAME), json.dumps(contents, indent=1, sort_keys=True))
