"""What a run trains: its data, network, trainer, loss and batch transform, built once from its ``TrainConfig``."""
import dataclasses
import logging
import os

import mxnet as mx
from mxnet import gluon

from data.auto_augment import AugmentThenNormalize, parse_policy
from data.augmentation import RGB_MEAN, RGB_STD
from data.demo import make_demo_dataset
from data.loaders import InputConfig, folder_source, record_source
from models import get_model
from models.params import load_params, parameter_dtype
from utils.batch_transform import BatchTransform
from utils.binary_cross_entropy import BinaryCrossEntropyLoss
from utils.distillation import CrossEntropyLoss, DistillationLoss
from utils.distributed import Cluster, horovod_trainer
from utils.ema import ModelEma
from utils.gradient_compression import PerArrayThresholdTrainer, PushThenPullTrainer, compression_params
from utils.lr_schedule import build_lr_scheduler, linear_scaled_lr
from utils.mixup import MixSchedule
from utils.optimizers import create_optimizer, optimizer_settings
from utils.precision import build_precision
from utils.progressive_resize import ProgressiveResize
from utils.pretrained import cached_gluoncv_params, load_for_finetuning
from utils.random_erasing import RandomErasing
from utils.seeding import draws_random_numbers
from utils.weight_decay import apply_no_bias_decay, keep_multipliers_by_index


def total_batch_size(config, contexts):
    """Images per batch of this process (all its devices)."""
    return config.batch_size * len(contexts)


def effective_lr(config, contexts, num_workers=1):
    """An explicit ``--lr`` as given; otherwise section 3.1's linear scaling with the global batch."""
    if config.lr is not None:
        return config.lr
    return linear_scaled_lr(total_batch_size(config, contexts) * num_workers, config.lr_base, config.lr_base_size)


def progressive_resize(config):
    """``--progressive-resize`` as the schedule of each epoch's training crop size, or None."""
    if config.progressive_resize is None:
        return None
    start, end = config.progressive_resize[:2]
    first, last = config.progressive_resize[2:] or (0, config.num_epochs - 1)
    return ProgressiveResize(start, end, first, last, config.progressive_resize_step)


def build_input_config(config, contexts, cluster=None):
    """What the input pipeline needs of the run's settings: this process's batch, its shard, the crops."""
    cluster = cluster or Cluster(config.kvstore)
    return InputConfig(batch_size=total_batch_size(config, contexts), input_size=config.input_size,
                       crop_ratio=config.crop_ratio, num_workers=config.num_data_workers,
                       seed=config.seed, num_parts=cluster.num_workers, part_index=cluster.rank,
                       ra_reps=config.ra_reps, val_input_size=config.val_input_size,
                       progressive_resize=progressive_resize(config),
                       unnormalized_crops=config.auto_augment is not None)


def build_data(config, contexts, cluster=None):
    """Training and validation batches with the paper's augmentation; classes and sizes come from the data.

    Each worker of a distributed job reads its own shard of the training set, with as many batches per epoch
    as every other worker (record_source derives them from the total count); all read the whole validation set.
    """
    input_config = build_input_config(config, contexts, cluster)
    if config.data_dir:
        return folder_source(config.data_dir, input_config, num_classes=config.num_classes)
    rec_train, rec_val = config.rec_train, config.rec_val
    if config.uses_demo:
        logging.info("No data given: using the built-in demo data set in %s", config.demo_dir)
        rec_train, rec_val = make_demo_dataset(config.demo_dir)
    clean_dir = os.path.join(config.save_dir, "clean") if config.skip_bad_records else None
    return record_source(rec_train, rec_val, input_config, idx_train=config.rec_train_idx,
                         idx_val=config.rec_val_idx, num_classes=config.num_classes, clean_dir=clean_dir,
                         log=logging.info)


def build_network(config, num_classes, contexts):
    """The network with the paper's initialization (section 2): Xavier weights, zero biases, BN gamma 1, beta 0."""
    net = get_model(config.model, classes=num_classes, last_gamma=config.last_gamma, drop_path=config.drop_path)
    # Shapes first, so that the weights are drawn now, from the run's seed: deferred to the first training
    # batch they would come from that epoch's generator, which differs between the workers of a distributed
    # job (each draws its own stochastic-depth masks), and a worker's first gradient would be taken at other
    # weights than rank 0's. (A forward pass would infer them too, but leaves oneDNN-layout weights on CPU,
    # which the dist kvstore cannot push.)
    net.infer_shape(mx.nd.zeros((1, 3, config.input_size, config.input_size)))
    net.initialize(mx.init.Xavier(rnd_type="uniform", factor_type="avg", magnitude=3), ctx=contexts)
    if config.pretrained_params:
        load_for_finetuning(net, config.pretrained_params)
    if config.no_wd:
        apply_no_bias_decay(net)
    if config.mode == "hybrid":
        net.hybridize(static_alloc=True, static_shape=True)
    return net


def build_teacher(config, num_classes, contexts):
    """The distillation teacher in inference mode with frozen weights, or None (section 5.3)."""
    if not config.teacher:
        return None
    params_file = config.teacher_params or cached_gluoncv_params(config.teacher)
    if config.teacher.endswith("-symbol.json"):
        teacher = gluon.SymbolBlock.imports(config.teacher, ["data"], params_file, ctx=contexts)
    else:
        teacher = get_model(config.teacher, classes=num_classes)
        teacher.initialize(ctx=contexts)
        teacher(mx.nd.zeros((1, 3, config.input_size, config.input_size), ctx=contexts[0],
                            dtype=parameter_dtype(teacher)))
        load_params(params_file, teacher, label=f"teacher weights for {config.teacher} {params_file}")
        teacher.load_parameters(params_file, ctx=contexts)
    teacher.collect_params().setattr("grad_req", "null")
    teacher.hybridize(static_alloc=True, static_shape=True)
    return teacher


def build_batch_transform(config, num_classes, first_index=0):
    """The augmentation policy, label smoothing, mixup, CutMix and random erasing, resolved once; the loop only
    calls the result.

    ``first_index`` is the index of this process's first image in the global batch (``dist_*`` workers other
    than rank 0 start further on), so that random erasing draws by the image's place in the global batch.
    """
    mix_schedule = None
    if config.mixup or config.cutmix:
        mix_schedule = MixSchedule(config.mixup_alpha if config.mixup else 0.0, config.cutmix, config.num_epochs,
                                   config.mixup_off_epoch, config.mixup_prob, config.mixup_switch_prob, config.seed)
    erasing = RandomErasing(config.reprob, config.remode, config.seed) if config.reprob else None
    auto_augment = None
    if config.auto_augment is not None:
        auto_augment = AugmentThenNormalize(parse_policy(config.auto_augment, config.seed), RGB_MEAN, RGB_STD)
    return BatchTransform(num_classes, config.label_smoothing, config.label_smoothing_style, mix_schedule, erasing,
                          first_index, auto_augment)


def build_trainer(config, net, contexts, batches_per_epoch, precision, cluster=None, begin_num_update=0):
    """``--optimizer`` (Nesterov SGD, section 2, by default) with the run's learning-rate schedule and weight decay,
    reducing gradients over a kvstore, compressed with ``--gradient-compression`` (``utils.gradient_compression``),
    or over Horovod's allreduce.

    The schedule counts optimizer updates: under dist_sync and Horovod one per global step, so a worker's
    ``batches_per_epoch`` is the number of global steps per epoch. A resumed run starts the count at
    ``begin_num_update``.
    """
    cluster = cluster or Cluster(config.kvstore)
    schedule = build_lr_scheduler(config.lr_mode, effective_lr(config, contexts, cluster.num_workers),
                                  cluster.updates_per_epoch(batches_per_epoch),
                                  config.num_epochs, warmup_epochs=config.warmup_epochs,
                                  warmup_lr=config.warmup_lr, decay=config.lr_decay,
                                  decay_epochs=config.lr_decay_epoch, poly_power=config.poly_power)
    optimizer = create_optimizer(config.optimizer, learning_rate=schedule.base_lr, wd=config.wd,
                                 lr_scheduler=schedule, begin_num_update=begin_num_update,
                                 **optimizer_settings(config.optimizer, config.momentum))
    if cluster.uses_horovod:
        trainer = horovod_trainer(net.collect_params(), optimizer)
    else:
        update_on_kvstore = cluster.update_on_kvstore
        if update_on_kvstore is None:
            update_on_kvstore = precision.update_on_kvstore
        if update_on_kvstore is None and hasattr(optimizer, "clip_to_global_norm"):
            # LAMB clips to the norm of the whole reduced gradient (engine.loop.update_weights): the devices
            # update after the reduction, not the kvstore inside it, one parameter at a time.
            update_on_kvstore = False
        elif cluster.is_async and hasattr(optimizer, "clip_to_global_norm") and cluster.is_chief:
            logging.warning("--optimizer lamb under --kvstore %s: the servers update one parameter at a time and "
                            "do not clip the global gradient norm", config.kvstore)
        compression = compression_params(config.gradient_compression, config.gc_threshold)
        trainer_class = PushThenPullTrainer if compression else gluon.Trainer
        if compression and config.gc_threshold is None:
            # The pushes are scaled by each array's threshold: only the devices see the sum in its own units.
            trainer_class, update_on_kvstore = PerArrayThresholdTrainer, False
        trainer = trainer_class(net.collect_params(), optimizer, kvstore=cluster.kvstore,
                                update_on_kvstore=update_on_kvstore, compression_params=compression)
    keep_multipliers_by_index(trainer.optimizer)
    return precision.prepare_trainer(trainer)


def build_loss(config, teacher, sparse_targets):
    """Cross-entropy, binary cross-entropy (``--bce-loss``) or distillation from ``teacher`` (section 5.3); each
    takes (logits, targets, images)."""
    if config.bce_loss:
        return BinaryCrossEntropyLoss(sparse_targets, config.bce_target_thresh)
    if teacher is None:
        return CrossEntropyLoss(sparse_targets)
    return DistillationLoss(teacher, config.temperature, config.hard_weight, sparse_targets)


@dataclasses.dataclass
class Recipe:
    """Everything one training step needs, built once before the loop."""

    net: object
    trainer: object
    loss_fn: object
    batch_transform: object
    precision: object
    step_batch: int
    model_ema: object = None  # utils.ema.ModelEma with --model-ema
    # The network draws from MXNet's generator (stochastic depth, dropout): seeded again at every batch.
    network_draws: bool = False


def build_recipe(config, data, contexts, cluster=None, begin_num_update=0):
    """Network, trainer, loss, batch transform and, with --model-ema, the weights' average, tricks resolved."""
    cluster = cluster or Cluster(config.kvstore)
    precision = build_precision(config.dtype, contexts)
    net = build_network(config, data.num_classes, contexts)
    trainer = build_trainer(config, net, contexts, data.batches_per_epoch, precision, cluster, begin_num_update)
    batch_transform = build_batch_transform(config, data.num_classes, cluster.rank * total_batch_size(config, contexts))
    teacher = build_teacher(config, data.num_classes, contexts)
    loss_fn = build_loss(config, teacher, batch_transform.sparse_targets)
    model_ema = None
    if config.model_ema:
        # Another instance built as the network is; its values come from the network at the first step, so
        # --pretrained-params is not read twice.
        averaged = build_network(dataclasses.replace(config, pretrained_params=None), data.num_classes, contexts)
        model_ema = ModelEma(net, averaged, config.model_ema_decay, config.model_ema_steps)
        if cluster.is_async and cluster.is_chief:
            logging.warning("--model-ema under --kvstore %s: each worker averages its own weights, which differ "
                            "between workers, so their averages differ too; rank 0's is saved", config.kvstore)
    return Recipe(net, trainer, loss_fn, batch_transform, precision,
                  step_batch=cluster.step_batch(total_batch_size(config, contexts)), model_ema=model_ema,
                  network_draws=draws_random_numbers(net))
