"""torchvision's training input pipeline on the same images and cores, as the reference for the policy rows of
``benchmarks.input_pipeline``.

Runs in an environment with PyTorch, torchvision and Pillow, without MXNet (``pip install torch torchvision``).
Per image, as torchvision's classification recipe (``references/classification/presets.py``) with
``--auto-augment ta_wide``: decode with Pillow, ``RandomResizedCrop``, ``RandomHorizontalFlip``,
``TrivialAugmentWide`` (nearest, the class's default; the recipe's ``train.py`` passes bilinear),
``PILToTensor``, ``ConvertImageDtype(float)``, ``Normalize``; and the same without the policy. One process,
one thread: images/s per core, to compare with ours at one decoding thread. The images are the JPEG files
``benchmarks.input_pipeline --write-jpegs DIR`` wrote from the records.

    python -m benchmarks.torchvision_pipeline /tmp/jpegs --input-size 224 --images 640 --rounds 3
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
from PIL import Image

# A torchvision wheel built for another torch cannot load its C operators, and importing it fails when it
# registers their shapes; the transforms measured here are Python and Pillow, which need none of them.
torch.library.register_fake = lambda *args, **kwargs: (lambda function: function)
from torchvision import transforms  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def pipeline(input_size, policy):
    steps = [transforms.RandomResizedCrop(input_size), transforms.RandomHorizontalFlip()]
    steps += [transforms.TrivialAugmentWide()] if policy else []
    steps += [transforms.PILToTensor(), transforms.ConvertImageDtype(torch.float), transforms.Normalize(MEAN, STD)]
    return transforms.Compose(steps)


def images_per_sec(paths, transform):
    tic = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            transform(image.convert("RGB"))
    return len(paths) / (time.perf_counter() - tic)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="JPEG files, one folder per class")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=640, help="images per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; rows give the median")
    parser.add_argument("--output", default="torchvision_pipeline.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    paths = sorted(os.path.join(root, name) for root, _, names in os.walk(args.folder) for name in names)[:args.images]
    rows = {name: [] for name in ("crop, flip", "crop, flip, TrivialAugmentWide")}
    images_per_sec(paths[:32], pipeline(args.input_size, policy=True))  # warm-up
    for _ in range(args.rounds):
        for name in rows:
            rows[name].append(images_per_sec(paths, pipeline(args.input_size, policy="TrivialAugment" in name)))
    print(f"torch {torch.__version__}, 1 thread, {len(paths)} images of {args.folder} at {args.input_size}, median of "
          f"{args.rounds} alternating rounds")
    print("| torchvision pipeline | images/s per core | rounds |")
    print("| --- | --- | --- |")
    for name, rounds in rows.items():
        print(f"| {name} | {statistics.median(rounds):.0f} | {', '.join(f'{x:.0f}' for x in rounds)} |")
    with open(args.output, "w") as handle:
        json.dump(dict(torch=torch.__version__, folder=args.folder, input_size=args.input_size, images=len(paths),
                       rows={name: dict(images_per_sec=statistics.median(rounds), rounds=rounds)
                             for name, rounds in rows.items()}), handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
