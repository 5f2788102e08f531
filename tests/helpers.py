"""Helpers shared by several test modules."""
import copy
import math
import os
import shutil
import subprocess
import sys

import mxnet as mx

import train_imagenet
from data.loaders import InputConfig, validation_transform
from data.records import RecordFiles
from engine.config import parse_config
from engine.recipe import build_network, build_trainer
from utils import checkpoint
from utils.optimizer_states import load_trainer_states
from utils.precision import build_precision


def randomize_parameters(net, seed):
    """Random values in every parameter, BatchNorm statistics included, so that a misplaced one shows.

    Weights are He-uniform, scale parameters and variances near 1, biases, shifts and means in [-0.5, 0.5],
    so that outputs stay of order 1 and an absolute tolerance means something. ``net`` must have known shapes.
    """
    mx.random.seed(seed)
    for key, param in net._collect_params_with_prefix().items():
        if key.endswith("weight"):
            bound = math.sqrt(6 / math.prod(param.shape[1:]))
            low, high = -bound, bound
        elif key.endswith(("gamma", "running_var")):
            low, high = 0.5, 1.5
        else:
            low, high = -0.5, 0.5
        param.set_data(mx.nd.random.uniform(low, high, shape=param.shape))


def folder_top1(net, val_dir, input_size, crop_ratio=0.875):
    """Top-1 accuracy of ``net`` on ``val_dir/<class>/<image>``, one image at a time, classes in sorted order.

    An independent count to check the scripts' figures against: only the resize and crop (checked on their own
    in tests/test_train.py) are shared with them.
    """
    transform = validation_transform(InputConfig(batch_size=1, input_size=input_size, crop_ratio=crop_ratio,
                                                 num_workers=1, seed=0))
    correct = total = 0
    for label, name in enumerate(sorted(os.listdir(val_dir))):
        for file_name in sorted(os.listdir(os.path.join(val_dir, name))):
            image = transform(mx.image.imread(os.path.join(val_dir, name, file_name))).expand_dims(axis=0)
            correct += int(net(image).argmax(axis=1).asscalar()) == label
            total += 1
    return correct / total


def parameter_values(block):
    """Structural name -> value (numpy, first device) of every parameter of ``block``."""
    return {key: param.data(param.list_ctx()[0]).asnumpy()
            for key, param in block._collect_params_with_prefix().items()}


def weight_decays(trainer, net):
    """Structural name -> the weight decay the trainer's optimizer applies to that trainable parameter of ``net``.

    Read through ``Optimizer._get_wds``, the very call the optimizer makes at each update, so it includes the
    per-parameter multipliers (``--no-wd``) wherever the optimizer keeps them.
    """
    keys = {param.name: key for key, param in net._collect_params_with_prefix().items()}
    decays = trainer.optimizer._get_wds(list(range(len(trainer._params))))
    return {keys[param.name]: decay for param, decay in zip(trainer._params, decays) if param.grad_req != "null"}


class _Spy:
    """Passes every call and attribute through to ``target``; ``on_call(result, *args)`` sees each call."""

    def __init__(self, target, on_call):
        self._target, self._on_call = target, on_call

    def __getattr__(self, name):
        return getattr(self._target, name)

    def __call__(self, *args):
        result = self._target(*args)
        self._on_call(result, *args)
        return result


class RunRecorder:
    """What a training run built and what each step of it fed the loss, for tests of the flags' effects.

    ``RunRecorder(monkeypatch)`` wraps ``train_imagenet.build_recipe``: the run gets the recipe it would have
    got, with its batch transform and loss wrapped to record their arguments. Nothing the run computes changes.

    After the run: ``net``, ``trainer``, ``loss_fn`` (unwrapped), ``teacher`` (or None) as built;
    ``schedule``, a copy of the optimizer's learning-rate schedule taken before the first update;
    ``teacher_at_start``, the teacher's parameters as built; ``at_first_step``, the network's parameters when
    the loss first ran, after the first forward pass (so BatchNorm's running statistics have moved once,
    nothing else has); ``batches``, one dict per batch with its ``epoch`` and, per device, the ``images`` and
    ``labels`` given to the batch transform and the ``calls`` to the loss: ``inputs`` (the images the network
    saw), ``targets``, ``outputs``, ``loss`` and ``hybridized`` (whether the network ran as a compiled graph).
    """

    def __init__(self, monkeypatch):
        self.batches, self.at_first_step = [], None
        build_recipe = train_imagenet.build_recipe

        def recording_build_recipe(config, data, contexts, *args, **kwargs):
            recipe = build_recipe(config, data, contexts, *args, **kwargs)
            self._built(recipe)
            recipe.batch_transform = _Spy(recipe.batch_transform, self._transformed)
            recipe.loss_fn = _Spy(recipe.loss_fn, self._loss_called)
            return recipe

        monkeypatch.setattr(train_imagenet, "build_recipe", recording_build_recipe)

    def _built(self, recipe):
        self.net, self.trainer, self.loss_fn = recipe.net, recipe.trainer, recipe.loss_fn
        self.schedule = copy.deepcopy(recipe.trainer.optimizer.lr_scheduler)
        self.teacher = getattr(recipe.loss_fn, "teacher", None)
        self.teacher_at_start = None if self.teacher is None else {
            name: param.data(param.list_ctx()[0]).asnumpy() for name, param in self.teacher.collect_params().items()}

    def _transformed(self, result, images, labels, epoch, batch=0):
        self.batches.append(dict(epoch=epoch, images=[x.asnumpy() for x in images],
                                 labels=[y.asnumpy() for y in labels], calls=[]))

    def _loss_called(self, loss, outputs, targets, images):
        if self.at_first_step is None:
            self.at_first_step = parameter_values(self.net)
        self.batches[-1]["calls"].append(dict(inputs=images.asnumpy(), targets=targets.asnumpy(),
                                              outputs=outputs.asnumpy(), loss=loss.asnumpy(),
                                              hybridized=self.net._active))

    def steps(self):
        """(epoch, images, labels, call) for every device of every batch, in training order."""
        return [(batch["epoch"], images, labels, call) for batch in self.batches
                for images, labels, call in zip(batch["images"], batch["labels"], batch["calls"])]


def copy_packed_set(tiny_set, folder, rewrite):
    """``tiny_set``'s packed splits copied into ``folder``, each record through ``rewrite(split, key, header, image
    bytes)``, which returns the header and image bytes to write."""
    os.makedirs(folder, exist_ok=True)
    for split in ("train", "val"):
        source, target = RecordFiles(str(tiny_set / split)), RecordFiles(os.path.join(folder, split))
        shutil.copyfile(source.classes, target.classes)
        reader = mx.recordio.MXIndexedRecordIO(source.idx, source.rec, "r")
        writer = mx.recordio.MXIndexedRecordIO(target.idx, target.rec, "w")
        for key in reader.keys:
            header, image = mx.recordio.unpack(reader.read_idx(key))
            writer.write_idx(key, mx.recordio.pack(*rewrite(split, key, header, image)))
        reader.close()
        writer.close()
    return folder


def disk_with_free_bytes(monkeypatch, free):
    """``shutil.disk_usage`` answers that every folder has ``free`` bytes free."""
    disk_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: disk_usage(path)._replace(free=free))


def trainer_error_line(capsys, argv):
    """The one line ``train_imagenet.py`` prints for bad input ``argv``, after checking it exits 2 with that line
    alone and no traceback."""
    assert train_imagenet.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One operator thread and MXNet's naive engine: an interrupted and resumed run reproduces the uninterrupted one.
DETERMINISTIC = dict(os.environ, MXNET_ENFORCE_DETERMINISM="1", OMP_NUM_THREADS="1", MXNET_ENGINE_TYPE="NaiveEngine",
                     PYTHONUNBUFFERED="1")


def start_training(flags, save_dir):
    """``train_imagenet.py FLAGS`` in a deterministic child process; its output goes to SAVE_DIR.out.txt (a pipe
    could fill and block it)."""
    log = open(f"{save_dir}.out.txt", "a")
    argv = [sys.executable, os.path.join(REPO, "train_imagenet.py"), *flags]
    return subprocess.Popen(argv, cwd=REPO, env=DETERMINISTIC, stdout=log, stderr=subprocess.STDOUT)


def finish_training(process, save_dir, expected_status=0):
    """The output of a ``start_training`` run, once it has exited with ``expected_status``."""
    status = process.wait(timeout=300)
    with open(f"{save_dir}.out.txt") as log:
        output = log.read()
    assert status == expected_status, output
    return output


def pickled_trainer_states(flags, folder, path, num_classes=3, batches_per_epoch=6):
    """Write to ``path`` what MXNet's ``Trainer.save_states`` writes (a pickle of the optimizer and its states)
    for the run of ``flags`` at its checkpoint ``folder``: the file GluonCV's train_imagenet.py saves beside its
    parameters, and our checkpoints' ``trainer.states`` before they held numbers only."""
    config, contexts = parse_config(flags), [mx.cpu()]
    state = checkpoint.read_checkpoint_state(str(folder))
    net = build_network(config, num_classes, contexts)
    net.load_parameters(os.path.join(folder, state["params"]), ctx=contexts)
    trainer = build_trainer(config, net, contexts, batches_per_epoch, build_precision(config.dtype, contexts))
    load_trainer_states(trainer, os.path.join(folder, checkpoint.OPTIMIZER_ARRAYS),
                        os.path.join(folder, checkpoint.OPTIMIZER_COUNTS))
    trainer.save_states(str(path))
    return path


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_cifar10_binary(path, images_per_batch=3, seed=0):
    """A small archive laid out as CIFAR-10's binary version (cifar-10-binary.tar.gz): five training batches and
    a test batch of ``images_per_batch`` records each (a label byte, 1,024 red, green, blue bytes), the class
    names' file; returns {file name: (labels, images (N, 32, 32, 3) RGB)}."""
    import io
    import tarfile

    import numpy as np

    rng = np.random.default_rng(seed)
    batches = {}
    with tarfile.open(path, "w:gz") as archive:
        def add(name, data):
            member = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))

        add("batches.meta.txt", ("\n".join(CIFAR10_CLASSES) + "\n\n").encode())
        for name in [f"data_batch_{number}.bin" for number in range(1, 6)] + ["test_batch.bin"]:
            labels = rng.integers(0, len(CIFAR10_CLASSES), images_per_batch, dtype=np.uint8)
            images = rng.integers(0, 256, (images_per_batch, 32, 32, 3), dtype=np.uint8)
            planes = images.transpose(0, 3, 1, 2).reshape(images_per_batch, -1)
            add(name, np.concatenate([labels[:, None], planes], axis=1).tobytes())
            batches[name] = (labels, images)
    return batches
