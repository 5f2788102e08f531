"""Several machines, on MXNet's parameter server or on Horovod: which worker this process is, and how steps are
counted.

``tools/launch.py`` starts the scheduler, servers and workers of a ps-lite job; a worker joins with
``mx.kv.create`` and learns its rank and the number of workers from the kvstore. ``horovodrun`` starts the ranks
of a Horovod job, one process per device, which join with ``hvd.init()``. Section 3.1's linear scaling then uses
the global batch (per-device batch x devices x workers).
"""
import dataclasses
import hashlib
import importlib.util
import os
import signal
import sys

import mxnet as mx

from utils.errors import UserError

DIST_KVSTORES = ("dist_sync", "dist_device_sync", "dist_async")
# The kvstore key of Cluster.agree_to_stop, which no Trainer parameter takes (they are numbered from 0), and what
# a worker that caught a signal pushes there: above any --gc-threshold, so that a 2-bit push still sends +T.
STOP_KEY = 999_999
STOP_PUSH = 1e30
# The jobs of several processes, each of which reads its own shard of the training records.
SHARDED_KVSTORES = DIST_KVSTORES + ("horovod",)


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's place in the job: the kvstore (object, or type name for one process and for Horovod, which
    have no kvstore of their own here), rank and size; under Horovod also the rank among its machine's processes."""

    kvstore: object
    rank: int = 0
    num_workers: int = 1
    local_rank: int = 0

    @property
    def is_chief(self):
        """Rank 0 alone writes the run's files."""
        return self.rank == 0

    @property
    def kvstore_type(self):
        return self.kvstore if isinstance(self.kvstore, str) else self.kvstore.type

    @property
    def uses_horovod(self):
        return self.kvstore_type == "horovod"

    @property
    def is_async(self):
        return self.num_workers > 1 and "async" in self.kvstore_type

    @property
    def update_on_kvstore(self):
        """Where the optimizer runs: on every worker (False) under ``dist_sync``, ``dist_device_sync`` and
        Horovod; on the servers (True) under ``dist_async``; MXNet's choice (None) for one process.

        A sync worker pushes its gradient, pulls the sum of all workers' and updates its own weights, as Horovod's
        ranks do after their allreduce: every worker applies the same update to the same weights (rank 0's,
        pulled before the first step), so the optimizer's states are the worker's own, equal on every worker,
        and checkpoints hold rank 0's, which a resumed job loads on every worker (the servers' states, which
        MXNet 1.9.1 cannot save, would restart at zero). AMP then sees the summed gradient before the update and
        skips an overflowed step on every worker (``utils.precision.Float16``). The servers only sum. On CPUs,
        validation makes oneDNN reorder the weights in place, after which the threaded engine's updates can
        differ in the last bit between workers, so every worker renews its arrays after validation
        (``utils.devices.renew_parameter_arrays``).

        ``dist_async`` applies each worker's push alone, on the servers (MXNet refuses worker-side updates
        there): they run the pickled optimizer (so per-parameter multipliers must survive pickling,
        ``utils.weight_decay.keep_multipliers_by_index``), its states restart at zero on a resume, and the
        worker's copy never counts an update (``engine.loop.current_lr``).
        """
        if self.uses_horovod:
            return False
        if isinstance(self.kvstore, str):
            return None
        return "async" in self.kvstore_type

    @property
    def workers_update_in_step(self):
        """Whether several processes each update their own copy of the weights, which must stay equal: sync
        ps-lite workers and Horovod's ranks."""
        return self.num_workers > 1 and self.update_on_kvstore is False

    def step_batch(self, process_batch):
        """The batch ``trainer.step`` divides the gradient by.

        Under sync the servers sum the gradients of all workers, so the step divides by the global batch;
        under async each worker's push is applied alone, so it divides by that worker's batch. Horovod's trainer
        averages the ranks' gradients (its gradient scale carries 1 / ranks), so its step divides by the rank's
        batch: the update again applies the sum over the global batch divided by the global batch.
        """
        return process_batch if self.is_async or self.uses_horovod else process_batch * self.num_workers

    def updates_per_epoch(self, batches_per_epoch):
        """Optimizer updates per epoch, which the schedule counts: async servers apply every worker's push."""
        return batches_per_epoch * (self.num_workers if self.is_async else 1)

    def global_step(self, batches_per_epoch, epoch, batches_done=0):
        """Optimizer updates done after ``batches_done`` batches of epoch ``epoch``, as checkpoints and curves count
        them."""
        return self.updates_per_epoch(batches_per_epoch) * epoch + self.updates_per_epoch(batches_done)

    def agree_to_stop(self, stop):
        """Whether the job stops here on a signal (``utils.interrupt.StopSignals``), the same answer on every rank;
        every rank must ask at the same points.

        A scheduler's SIGTERM reaches the workers one by one: one that stopped after step k while another went on
        would leave the other waiting in step k+1's reduction until the launcher kills it, and the checkpoint would
        be lost whenever rank 0 was the one waiting. So the workers sum what they caught, one scalar a step:
        Horovod's ranks allreduce the signal numbers (their largest is taken); ``dist_sync`` workers push and pull
        a key of their own (``STOP_KEY``), which the servers sum as they sum gradients, and a worker that did not
        catch the signal itself takes it as SIGTERM. ``dist_async`` workers never wait for each other: each answers
        for itself.
        """
        if not self.workers_update_in_step:
            return stop.arrived
        # The answer is the reduction's alone: a signal that lands while it runs counts at the next one.
        if self.uses_horovod:
            import horovod.mxnet as hvd
            caught = hvd.allreduce(mx.nd.array([stop.signal_number or 0]), op=hvd.Max, name="stop signal")
            signal_number = int(caught.asscalar())
        else:
            # Push, then pull: pushpull refuses --gradient-compression, under which the push arrives as +T.
            caught = mx.nd.array([STOP_PUSH if stop.arrived else 0.0])
            self.kvstore.push(STOP_KEY, caught)
            self.kvstore.pull(STOP_KEY, out=caught)
            signal_number = signal.SIGTERM if caught.asscalar() > 0 else 0
        if signal_number:
            stop.take(signal_number)
        return bool(signal_number)

    def own_devices(self, contexts):
        """The devices this process trains on, of those the flags name: under Horovod, one process per device, rank
        r of a machine on its GPU r (the flags give one GPU or the CPU); elsewhere ``contexts`` as given."""
        if not self.uses_horovod or contexts[0].device_type != "gpu":
            return contexts
        available = mx.context.num_gpus()
        if self.local_rank >= available:
            raise UserError(f"horovodrun started rank {self.local_rank} of this machine, which takes GPU "
                            f"{self.local_rank}, but this MXNet sees {available}; start at most as many processes "
                            "per machine as it has GPUs (horovodrun -H host:GPUS)")
        return [mx.gpu(self.local_rank)]


def started_by_launcher():
    """Whether a job launcher started this process: tools/launch.py (MXNet's own), which gives each process its
    ps-lite role, or horovodrun, which gives each its rank."""
    return bool(os.environ.get("DMLC_ROLE") or os.environ.get("HOROVOD_RANK"))


ONE_MACHINE_KVSTORES = ("device", "local", "nccl")
# What tools/launch.py sets for each process; ps-lite without them fails with a C++ traceback.
PS_LITE_VARIABLES = ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER", "DMLC_NUM_WORKER")


HOROVOD_MISSING = ("--kvstore horovod needs Horovod built with MXNet support, which is not installed; build it "
                   "against this MXNet with `python -m tools.install_horovod` (docs/multi-machine.md, Horovod), or use "
                   "--kvstore dist_sync with tools/launch.py")


def join_horovod():
    """Join the Horovod job that ``horovodrun`` started (one process per device) and return this rank's
    ``Cluster``."""
    if importlib.util.find_spec("horovod") is None:
        raise UserError(HOROVOD_MISSING)
    if not os.environ.get("HOROVOD_RANK"):
        # Without horovodrun, hvd.init() makes a job of one rank that would train alone without a word.
        raise UserError("--kvstore horovod runs as one rank of a job that horovodrun starts, but HOROVOD_RANK is "
                        "not set; launch it with `horovodrun -np N -H host1:slots,host2:slots python "
                        "train_imagenet.py ... --kvstore horovod` (N = all devices, one process each), or use "
                        "--kvstore device on one machine")
    try:
        import horovod.mxnet as hvd
    except ImportError:  # Horovod built without MXNet support
        raise UserError(HOROVOD_MISSING) from None
    hvd.init()
    return Cluster("horovod", rank=hvd.rank(), num_workers=hvd.size(), local_rank=hvd.local_rank())


def join_cluster(kvstore_type):
    """Create the kvstore (joining the job for a ``dist_*`` type, or Horovod's) and return this process's
    ``Cluster``."""
    if kvstore_type == "horovod":
        return join_horovod()
    if kvstore_type not in ONE_MACHINE_KVSTORES + DIST_KVSTORES:
        # MXNet 1.9.1 takes any other name for a local kvstore, so a typo would pass unnoticed.
        known = ", ".join(ONE_MACHINE_KVSTORES + SHARDED_KVSTORES)
        raise UserError(f"unknown --kvstore {kvstore_type!r}; use one of {known}")
    if kvstore_type not in DIST_KVSTORES:
        # One process: Gluon's Trainer creates the kvstore from its name.
        return Cluster(kvstore_type)
    missing = [name for name in PS_LITE_VARIABLES if not os.environ.get(name)]
    if missing:
        raise UserError(f"--kvstore {kvstore_type} runs as one worker of a job that tools/launch.py starts, but "
                        f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set; launch it with "
                        "`python tools/launch.py -n WORKERS -s SERVERS --launcher local|ssh [-H HOSTFILE] python "
                        f"train_imagenet.py ... --kvstore {kvstore_type}`, or use --kvstore device on one machine")
    kvstore = mx.kv.create(kvstore_type)
    return Cluster(kvstore, rank=kvstore.rank, num_workers=kvstore.num_workers)


def weights_fingerprint(net):
    """SHA-256 of the trainable parameters in order, to check that workers hold identical weights.

    BatchNorm's running statistics are left out: each worker accumulates its own over its shard of the data
    (rank 0's are the ones saved).
    """
    digest = hashlib.sha256()
    for param in net.collect_params().values():
        if param.grad_req != "null":
            digest.update(param.data(param.list_ctx()[0]).asnumpy().tobytes())
    return digest.hexdigest()


def horovod_trainer(params, optimizer):
    """Horovod's Gluon trainer over ``params``: each step allreduces every gradient (of the process's one device)
    over the ranks, averaged (its gradient scale carries 1 / ranks), and runs ``optimizer`` on every rank."""
    import horovod.mxnet as hvd
    return hvd.DistributedTrainer(params, optimizer)


def _is_horovod_trainer(trainer):
    horovod = sys.modules.get("horovod.mxnet")  # a Horovod trainer exists only once join_horovod imported it
    return horovod is not None and isinstance(trainer, horovod.DistributedTrainer)


def start_kvstore(trainer, step_batch):
    """Create the trainer's kvstore and give every device and worker the same starting parameters, before its
    first step, which divides the gradient by ``step_batch``.

    Two orderings that MXNet 1.9.1 leaves open are closed here. A static-memory graph's writes to BatchNorm's
    running statistics are not ordered before later reads, so the queued work is finished before device 0's
    parameters are copied to the others. Under ``dist_*``, rank 0 pushes the initial values from the
    parameters' own arrays on CPU and passes the init barrier without waiting for the push to reach the servers
    (``KVStoreDist::InitImpl``), so another worker's first pull could arrive first and the server aborts ("init
    K first"); here rank 0 finishes its pushes and a second barrier holds the others until it has. Under
    ``--gradient-compression``, ``_init_kvstore`` sets the compression before these pushes, and MXNet sends them
    uncompressed (``utils.gradient_compression``). Horovod's trainer has no kvstore: rank 0 broadcasts every
    parameter instead, BatchNorm's running statistics included, as ``dist_*``'s init pushes them. (A Horovod run
    resumed from a checkpoint with the optimizer's states does not come here: loading them starts the trainer, on
    every rank, and every rank loaded the same weights.)
    """
    mx.nd.waitall()
    # The optimizer goes to the servers with the kvstore, so it must carry the gradient's scale already.
    trainer._check_and_rescale_grad(trainer._scale / step_batch)
    trainer._init_kvstore()
    kvstore = trainer._kvstore
    if kvstore is None or "dist" not in kvstore.type:
        trainer._init_params()
        if _is_horovod_trainer(trainer):
            import horovod.mxnet as hvd
            hvd.broadcast_parameters({param.name: param for param in trainer._params}, root_rank=0)
        return
    params = trainer._params_to_init
    keys = [trainer._param2idx[param.name] for param in params]
    kvstore.init(keys, [param.list_data()[0] for param in params])
    if not trainer._update_on_kvstore:
        kvstore.init(STOP_KEY, mx.nd.zeros((1,)))  # Cluster.agree_to_stop's sum, where workers update in step
    mx.nd.waitall()
    kvstore._barrier()
    kvstore.pull(keys, out=[param.list_data() for param in params])
    mx.nd.waitall()
    trainer._params_to_init = []
