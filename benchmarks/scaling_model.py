"""A communication model of data-parallel training on several hosts: scaling efficiency and images/s for 8 to 64
GPUs (8 a host), on MXNet's parameter server (ps-lite, ``--kvstore dist_sync``) and on ring allreduce.

Per optimizer step every GPU computes for ``t_compute`` seconds (its batch over its published images/s); the
gradients then cross each host's network card (NIC), ``B`` bytes/s in each direction at once (full duplex).

**ps-lite, as ``train_imagenet.py --num-gpus 8 --kvstore dist_sync`` runs it.** One worker process per host
drives its 8 GPUs. Gluon's ``Trainer._allreduce_grads`` (MXNet 1.9.1, ``gluon/trainer.py``) calls
``kvstore.pushpull(i, <the 8 gradients>, out=<the 8 weights>, priority=-i)`` once per parameter ``i``:
``KVStoreDist::PushPullImpl`` (``src/kvstore/kvstore_dist.h``) first sums the 8 gradients on the host (``dist_sync``
uses ``CommCPU``: copies to pinned CPU memory, summed on the CPU; ``dist_device_sync`` uses ``CommDevice``: summed
on a GPU, one copy to the CPU; ``KVStore::Create`` picks ``CommDevice`` when the type contains "device"), then
sends ONE push of the sum per key and receives the sum over all workers once, which it copies to the 8 GPUs. So both
types put the same bytes on the NIC: the model size ``M`` out and ``M`` in per host and step. They differ only on
the host (PCIe and CPU or GPU summing), which is not modelled: the published 8-GPU speeds below include summing
over 8 GPUs. Keys: ``KVStoreDist::EncodeDefaultKey`` sends an array of fewer than ``MXNET_KVSTORE_BIGARRAY_BOUND``
elements (default 1,000,000) whole to server ``(key * 9973) % S`` and splits a larger one into S near-equal parts,
one per server (``server_loads``); the key is the parameter's index among all of the Trainer's parameters,
BatchNorm's running statistics included (``gradient_keys``). ``tools/launch.py -n H -s H -H hosts`` puts server h
and worker h on host h. Host h's NIC then carries, in each direction, its worker's pushes to the other servers,
``M - L_h``, and its server's replies to the other workers, ``(H - 1) L_h``, where ``L_h`` is server h's share:
``M + (H - 2) L_h`` (``2 (H - 1) / H M`` when the shares are equal, as for a ring). The servers answer a key only
when every worker has pushed it (sync mode) and only sum: the workers pull the sum and run the optimizer
(``utils.distributed.Cluster.update_on_kvstore``).
Software costs of a ps-lite process (server or worker): ``c`` seconds per request (key part) it handles and a
per-byte rate ``R`` (its ZeroMQ copies, the server's sums), which the loopback calibration
(``benchmarks.ps_lite_calibration``) measures. With NIC and processes working on different keys at once::

    t_ps = max over hosts h of max( (M + (H - 2) L_h) / B,                      the NIC
                                    H L_h / R + H P_h c,                         server h (P_h key parts)
                                    M / R + P c )                                worker h (P parts in all)

**Ring allreduce** (Horovod or NCCL across all N GPUs): every GPU, and so every host's NIC, sends and receives
``2 (N - 1) / N M``; ``--allreduce hierarchical`` (Horovod's ``--hierarchical-allreduce``: NCCL inside the host,
a ring of the H hosts across them) ``2 (H - 1) / H M``. Each fused buffer (Horovod's fusion threshold, 128 MB
since v0.21.0) takes ``2 (p - 1)`` dependent ring steps of latency ``a``::

    t_ring = 2 (p - 1) / p M / B + 2 (p - 1) ceil(M / 128 MB) a           (p = N, or H hierarchical)

One host (8 GPUs) sends nothing over the NIC: the published speeds are those of 8 GPUs of one host already.

**Overlap.** In our FP32 loop (``engine.loop.train_step``) nothing waits between ``autograd.backward`` (which only
queues the backward pass on MXNet's engine) and ``trainer.step``, whose ``pushpull`` calls are queued in parameter
order with priority ``-i``; the engine runs each key's reduce and push as soon as the backward pass has written that
gradient, so communication can run during the whole backward pass. The host then waits only for the forward pass
(``asnumpy`` of the outputs and losses for the metrics), which the next forward pass follows anyway, and for the
workers' stop agreement after the step (``Cluster.agree_to_stop``, one scalar's round trip, which may queue behind
the step's messages): the next forward pass waits for the same communication anyway, since the first layers'
weights are updated from the gradients the backward pass writes last. (Under AMP,
``--dtype float16``, ``Trainer._update`` reads ``has_overflow``, an ``asnumpy``, after the reductions are queued:
that waits for them to finish, but they still overlap the backward pass.) The gradients that come first hold most
of the bytes (ResNet-50-D's last stage and classifier, 67% of its parameters), so ``--overlap`` defaults to 1:
communication may hide under the whole backward pass, 2/3 of the compute (a backward pass costs twice a forward
pass, the convention of ``benchmarks/throughput.py``)::

    t_step = t_compute + t_comm - min(t_comm, overlap x 2/3 x t_compute)
    efficiency = t_compute / t_step;  images/s = N x batch per GPU / t_step

``--overlap 0`` gives the bound without overlap; the 90%-bandwidth lines report both.

**Precision.** ``--dtype float16`` in this project is AMP (``utils/precision.py``): parameters and their gradient
arrays stay FP32, so 4 bytes a gradient go on the wire (checked: after ``amp.init()`` every parameter and gradient
of our networks is float32); ``train_imagenet.py`` also refuses FP16 under ``dist_*``. The paper's section 3.2
(and GluonCV's ``--dtype float16``: ``net.cast('float16')`` with a multi-precision optimizer) keeps FP16 weights and
gradients with an FP32 master copy: 2 bytes a gradient (the server keeps its FP32 copy, ``store_realt_`` in
``kvstore_dist_server.h``). The rows: ``r50d-fp32`` (what our dist_sync trains today), ``r50d-fp16`` (the paper's
FP16 gradients), ``r50d-amp`` (our AMP: FP16 compute, FP32 gradients), ``mobilenet-fp16``.

**2-bit compression** (``--gradient-compression 2bit``, ``utils/gradient_compression.py``): a worker's push carries
one 32-bit word per 16 gradient values, 1/16 of the bytes (``compression_factor``), while the servers' replies, the
summed gradients, stay whole. Host h's NIC then sends ``(M - L_h) / 16 + (H - 1) L_h`` and receives
``(H - 1) L_h / 16 + M - L_h``, and the busier direction counts; the busier direction of a server or worker
process is still the replies', so their software costs stay as above, and the quantizing (a pass over each gradient
before it is pushed, one over each push on the servers) is not modelled. MXNet's compression is the kvstore's, so
the row ``r50d-fp32-2bit`` (``r50d-fp32`` with 2-bit pushes) is ps-lite's alone. Its accuracy is not the
uncompressed run's: ``benchmarks.gradient_compression`` measures the bytes, nothing here the accuracy.

**Inputs** (``WORKLOADS``; ``--step-seconds NAME=S`` replaces one with a step time you measured). Parameter and
key counts come from our networks; images/s per GPU, at the paper's batch per GPU:

- ``r50d-fp32``, batch 32: 200.7 for ResNet-50 (v1), scaled to ResNet-50-D by our multiply-add counts (3.858 /
  4.329 G): He et al. 2019, section 3.2, training "reduces the training time for ResNet-50 from 13.3-min per epoch"
  (8 V100, FP32, batch 256) "to 4.4-min per epoch"; 1,281,167 images / 798 s / 8 GPUs.
- ``r50d-fp16`` and ``r50d-amp``, batch 128: 646.1, GluonCV's training log of ResNet-50-D (dmlc/web-data,
  ``gluoncv/logs/classification/imagenet/resnet50_v1d-mixup.log``; FP16, batch 128 a GPU, 8 GPUs): the median of
  its epoch-0 ``Speed`` lines at batches 99 to 449, 5,169 samples/s, over 8.
- ``mobilenet-fp16``, batch 128: 664.4, GluonCV's ``mobilenet1.0.log`` in the same folder (FP16, batch 128, 8
  GPUs): median 5,315 samples/s over 8.

Cross-checks, not used: the paper's 4.4 min gives 606.6 images/s a GPU for ResNet-50 in FP16, 540.6 scaled to
ResNet-50-D; NVIDIA's Deep Learning Examples (``MxNet/Classification/RN50v1.5/README.md``, mxnet-20.12-py3
container, one V100 16GB) report 384 images/s in FP32 at batch 96 and 1,376 with AMP at batch 192 for ResNet-50
v1.5, about twice the figures above: a GPU step twice as fast needs about twice the bandwidth. Unverified: the GPU
of GluonCV's logs (not named in them; V100 assumed); that MobileNet's figure is the network's own (GluonCV's
mobilenet0.25, 0.5 and 0.75 logs run at the same 5,300-5,800 samples/s: the input pipeline sets the pace); the
defaults of ``--ps-request-us`` and ``--ring-step-us``, assumptions until the loopback calibration measures
ps-lite's per-request cost on a quiet machine. ``--software-gbytes-per-s`` (``R``) is unlimited unless given.

    python -m benchmarks.scaling_model --output-dir benchmarks/results/scaling-model
"""
import argparse
import dataclasses
import math
import os
import shlex
import statistics
import sys

from benchmarks.report import write_report
from utils.errors import UserError, command_line_entry
from utils.gradient_compression import VALUES_PER_WORD

GPU_COUNTS = (8, 16, 32, 64)
GPUS_PER_HOST = 8
BANDWIDTHS_GBIT = (10, 25, 100)
BIGARRAY_BOUND = 1000 * 1000  # MXNET_KVSTORE_BIGARRAY_BOUND's default, src/kvstore/kvstore_dist.h
SERVER_HASH = 9973  # EncodeDefaultKey: a small array goes to server (key * 9973) % S
BACKWARD_SHARE = 2 / 3  # of a step's compute: backward costs twice the forward pass
HOROVOD_FUSION_BYTES = 128 * 2 ** 20  # Horovod's default fusion threshold since v0.21.0 (64 MB before)
TARGET_EFFICIENCY = 0.9
CLASSES = 1000
INPUT_SIZE = 224
IMAGENET_TRAIN_IMAGES = 1281167
# Assumed (unverified) until the loopback calibration measures them; flags override.
PS_REQUEST_SECONDS = 50e-6
RING_STEP_SECONDS = 20e-6

# He et al. 2019, section 3.2: "reduces the training time for ResNet-50 from 13.3-min per epoch" (8 V100, FP32,
# batch 256) "to 4.4-min per epoch" (FP16, batch 1024).
PAPER_R50_FP32_IMAGES_PER_SEC = IMAGENET_TRAIN_IMAGES / (13.3 * 60) / 8
# GluonCV's logs (dmlc/web-data gluoncv/logs/classification/imagenet/), 8 GPUs, FP16, batch 128 per GPU: the
# epoch-0 "Speed: ... samples/sec" lines at batches 99, 149, ..., 449.
GLUONCV_R50D_FP16_SPEEDS = (5270.368264, 5234.422370, 5257.078862, 5284.668100, 5104.320503, 4944.898212,
                            4833.109920, 4921.777402)
GLUONCV_MOBILENET_FP16_SPEEDS = (5792.222843, 4567.689220, 5778.145786, 5441.488622, 4610.596862, 5443.280843,
                                 4272.375232, 5188.587437)


@dataclasses.dataclass(frozen=True)
class Workload:
    """One network trained at one precision: its gradients' width on the wire and its published speed."""

    name: str  # the --step-seconds and JSON key
    label: str
    model: str  # our registry name
    gradient_bytes: int  # bytes of one gradient element (and weight) before any compression
    batch_per_gpu: int
    images_per_sec_per_gpu: float  # published, for ``measured_model``
    source: str
    measured_model: str = None  # the network the speed was published for, when it is not ``model``
    compression_factor: int = 1  # a push carries 1/compression_factor of the gradient's bytes (2-bit: 16)
    backends: tuple = ("ps-lite", "allreduce")  # the keys of BACKENDS this workload runs on


WORKLOADS = (
    Workload("r50d-fp32", "ResNet-50-D, FP32", "resnet50_v1d", 4, 32, PAPER_R50_FP32_IMAGES_PER_SEC,
             "He et al. 2019 sec. 3.2 (ResNet-50, 13.3 min an epoch on 8 V100), scaled by multiply-adds",
             measured_model="resnet50_v1"),
    Workload("r50d-fp16", "ResNet-50-D, FP16 gradients (paper)", "resnet50_v1d", 2, 128,
             statistics.median(GLUONCV_R50D_FP16_SPEEDS) / 8, "GluonCV resnet50_v1d-mixup.log, 8 GPUs"),
    Workload("r50d-amp", "ResNet-50-D, AMP: FP32 gradients (ours)", "resnet50_v1d", 4, 128,
             statistics.median(GLUONCV_R50D_FP16_SPEEDS) / 8, "GluonCV resnet50_v1d-mixup.log, 8 GPUs"),
    Workload("mobilenet-fp16", "MobileNet 1.0, FP16 gradients", "mobilenet1.0", 2, 128,
             statistics.median(GLUONCV_MOBILENET_FP16_SPEEDS) / 8, "GluonCV mobilenet1.0.log, 8 GPUs"),
    Workload("r50d-fp32-2bit", "ResNet-50-D, FP32, 2-bit pushes", "resnet50_v1d", 4, 32, PAPER_R50_FP32_IMAGES_PER_SEC,
             "as r50d-fp32", measured_model="resnet50_v1", compression_factor=VALUES_PER_WORD,
             backends=("ps-lite",)),
)


@dataclasses.dataclass(frozen=True)
class Network:
    """What a step sends: the (kvstore key, elements) of every gradient array, and the compute it follows."""

    keys: tuple
    gradient_bytes: int
    step_seconds: float  # compute of one step on one GPU
    batch_per_gpu: int
    compression_factor: int = 1  # a push carries 1/compression_factor of the gradient's bytes

    @property
    def model_bytes(self):
        return sum(size for _, size in self.keys) * self.gradient_bytes

    @property
    def pushed_bytes(self):
        """Bytes of one worker's pushes of a step (the packing's last, partly filled word of each array aside)."""
        return self.model_bytes / self.compression_factor


@dataclasses.dataclass(frozen=True)
class Links:
    """The cluster's speeds: NIC bandwidth and the software costs of ps-lite and of a ring."""

    nic_bytes_per_sec: float  # each host's NIC, in each direction
    ps_request_seconds: float = PS_REQUEST_SECONDS  # a ps-lite process's cost per key part it handles
    software_bytes_per_sec: float = math.inf  # bytes per second a ps-lite process moves in each direction
    ring_step_seconds: float = RING_STEP_SECONDS  # latency of one ring step
    hierarchical: bool = False  # ring of hosts instead of a ring of all GPUs


def link_bytes_per_sec(gbit_per_sec):
    """Bytes per second of a link of ``gbit_per_sec`` Gbit/s (10^9 bits)."""
    return gbit_per_sec * 1e9 / 8


def gradient_keys(model):
    """(kvstore key, elements) of each gradient array of ``model``, as Gluon's Trainer numbers them: the key is
    the parameter's index among all the network's parameters, BatchNorm's running statistics included."""
    import mxnet as mx
    from models import get_model
    net = get_model(model, classes=CLASSES)
    net.infer_shape(mx.nd.zeros((1, 3, INPUT_SIZE, INPUT_SIZE)))
    return tuple((key, math.prod(param.shape)) for key, param in enumerate(net.collect_params().values())
                 if param.grad_req != "null")


def multiply_adds(model):
    """Multiply-adds of one forward pass of ``model`` at 224 (``models.complexity``)."""
    import mxnet as mx
    from models import get_model
    from models.complexity import count_multiply_adds
    net = get_model(model, classes=CLASSES)
    net.initialize(mx.init.Xavier())
    return count_multiply_adds(net, INPUT_SIZE)


def build_network(workload, step_seconds=None):
    """The ``Network`` of ``workload``: our network's keys, its step time from the published speed (scaled by
    multiply-adds when published for another network) unless ``step_seconds`` is given."""
    if step_seconds is None:
        images_per_sec = workload.images_per_sec_per_gpu
        if workload.measured_model:
            images_per_sec *= multiply_adds(workload.measured_model) / multiply_adds(workload.model)
        step_seconds = workload.batch_per_gpu / images_per_sec
    return Network(gradient_keys(workload.model), workload.gradient_bytes, step_seconds, workload.batch_per_gpu,
                   workload.compression_factor)


def split_sizes(size, parts):
    """EncodeDefaultKey's split of a big array: part i is round(size / parts * (i + 1)) - round(size / parts * i),
    C's ``round`` (halves away from zero)."""
    def c_round(value):
        return math.floor(value + 0.5)
    return [c_round(size / parts * (i + 1)) - c_round(size / parts * i) for i in range(parts)]


def server_loads(keys, num_servers, bound=BIGARRAY_BOUND):
    """Elements and requests (key parts) each of ``num_servers`` servers gets from one worker's push."""
    elements, requests = [0] * num_servers, [0] * num_servers
    for key, size in keys:
        if size < bound:
            server = key * SERVER_HASH % num_servers
            elements[server] += size
            requests[server] += 1
        else:
            for server, part in enumerate(split_sizes(size, num_servers)):
                elements[server] += part
                requests[server] += 1
    return elements, requests


def ps_lite_nic_bytes(model_bytes, server_bytes, hosts, compression_factor=1):
    """Bytes host h's NIC carries per step in its busier direction when server h shares the host with worker h:
    out, the worker's pushes to the other servers and the server's replies to the other workers; in, their mirror.
    Pushes carry 1/``compression_factor`` of the gradient's bytes, replies (the weights) all of theirs."""
    remote_pushes, remote_replies = model_bytes - server_bytes, (hosts - 1) * server_bytes
    return max(remote_pushes / compression_factor + remote_replies, remote_replies / compression_factor + remote_pushes)


def ps_lite_seconds(network, hosts, links):
    """Communication time of one step on ps-lite: the busiest of every host's NIC, server and worker."""
    elements, requests = server_loads(network.keys, hosts)
    model_bytes, all_requests = network.model_bytes, sum(requests)
    worker = model_bytes / links.software_bytes_per_sec + all_requests * links.ps_request_seconds
    busiest = worker
    for server_elements, server_requests in zip(elements, requests):
        server_bytes = server_elements * network.gradient_bytes
        nic = ps_lite_nic_bytes(model_bytes, server_bytes, hosts, network.compression_factor) / links.nic_bytes_per_sec
        server = hosts * (server_bytes / links.software_bytes_per_sec + server_requests * links.ps_request_seconds)
        busiest = max(busiest, nic, server)
    return busiest


def ring_bytes(model_bytes, participants):
    """Bytes each member of a ring allreduce sends (and receives): 2 (p - 1) / p of the model."""
    return 2 * (participants - 1) / participants * model_bytes


def ring_seconds(network, hosts, links):
    """Communication time of one step's ring allreduce over the NICs; none inside one host."""
    if hosts == 1:
        return 0.0
    participants = hosts if links.hierarchical else hosts * GPUS_PER_HOST
    buffers = math.ceil(network.model_bytes / HOROVOD_FUSION_BYTES)
    return (ring_bytes(network.model_bytes, participants) / links.nic_bytes_per_sec
            + 2 * (participants - 1) * buffers * links.ring_step_seconds)


BACKENDS = {"ps-lite": ps_lite_seconds, "allreduce": ring_seconds}


def step_seconds(compute_seconds, comm_seconds, overlap):
    """A step's time when communication may hide under ``overlap`` of the backward pass."""
    return compute_seconds + comm_seconds - min(comm_seconds, overlap * BACKWARD_SHARE * compute_seconds)


def predict(network, backend, gpus, links, overlap):
    """Scaling efficiency and images/s of ``gpus`` GPUs (8 a host) against as many GPUs at the published speed
    a GPU (itself measured on 8 GPUs of one host)."""
    comm = BACKENDS[backend](network, gpus // GPUS_PER_HOST, links)
    step = step_seconds(network.step_seconds, comm, overlap)
    return dict(gpus=gpus, comm_seconds=comm, step_seconds=step, efficiency=network.step_seconds / step,
                images_per_sec=gpus * network.batch_per_gpu / step)


def bandwidth_for(network, backend, gpus, links, overlap, target=TARGET_EFFICIENCY):
    """The NIC bandwidth (Gbit/s) at which the model reaches ``target`` efficiency, by bisection on a log scale;
    None when even an infinitely fast NIC would not (latency or software bound)."""
    def efficiency(gbit):
        faster = dataclasses.replace(links, nic_bytes_per_sec=link_bytes_per_sec(gbit))
        return predict(network, backend, gpus, faster, overlap)["efficiency"]
    low, high = 1e-3, 1e6
    if efficiency(high) < target:
        return None
    if efficiency(low) >= target:
        return low
    for _ in range(100):
        middle = math.sqrt(low * high)
        low, high = (middle, high) if efficiency(middle) < target else (low, middle)
    return high


def loopback_seconds(keys, gradient_bytes, workers, servers, software_bytes_per_sec, request_seconds, cores):
    """The same model on one machine over 127.0.0.1 (``benchmarks.ps_lite_calibration``): no NIC, every process's
    software cost, and no faster than the machine's ``cores`` can do all of it together."""
    elements, requests = server_loads(keys, servers)
    model_bytes = sum(size for _, size in keys) * gradient_bytes
    busy = [workers * (size * gradient_bytes / software_bytes_per_sec + count * request_seconds)
            for size, count in zip(elements, requests)]
    busy += [model_bytes / software_bytes_per_sec + sum(requests) * request_seconds] * workers
    return max(max(busy), sum(busy) / cores)


def model_table(workloads, results, bandwidths, gpu_counts):
    """Markdown lines: efficiency and images/s per workload, backend and bandwidth."""
    from utils.plots import markdown_table
    header = ["network", "backend", "Gbit/s"] + [f"{gpus} GPUs" for gpus in gpu_counts]
    rows = []
    for workload in workloads:
        for backend in workload.backends:
            for gbit in bandwidths:
                cells = [f"{100 * r['efficiency']:.0f}% ({r['images_per_sec']:,.0f})"
                         for r in results[workload.name][backend][f"{gbit:g}"]]
                rows.append([workload.label, backend, f"{gbit:g}"] + cells)
    return markdown_table(header, rows)


def inputs_table(workloads, networks):
    from utils.plots import markdown_table
    header = ["row", "network", "gradient arrays (keys)", "parameters", "MB per push", "batch per GPU",
              "compute per step (s)", "source of the compute time"]
    rows = [[w.name, w.model, str(len(networks[w.name].keys)), f"{sum(s for _, s in networks[w.name].keys):,}",
             f"{networks[w.name].pushed_bytes / 1e6:.1f}", str(w.batch_per_gpu),
             f"{networks[w.name].step_seconds:.4f}", w.source] for w in workloads]
    return markdown_table(header, rows)


def plot(workloads, results, bandwidths, gpu_counts, path):
    """Efficiency against GPU count, one panel per workload: ps-lite solid, allreduce dashed, a colour per
    bandwidth."""
    from utils.plots import panels, save_figure
    figure, axes = panels(len(workloads))
    for axis, workload in zip(axes, workloads):
        lowest = 100.0
        for colour, gbit in enumerate(bandwidths):
            for backend in workload.backends:
                style = "-" if backend == "ps-lite" else "--"
                values = [100 * r["efficiency"] for r in results[workload.name][backend][f"{gbit:g}"]]
                lowest = min(lowest, *values)
                axis.plot(gpu_counts, values, style, marker="o", color=f"C{colour}",
                          label=f"{backend}, {gbit:g} Gbit/s")
        axis.axhline(100 * TARGET_EFFICIENCY, color="grey", linewidth=0.8)
        axis.set_xscale("log", base=2)
        axis.minorticks_off()
        axis.set_xticks(gpu_counts, [str(gpus) for gpus in gpu_counts])
        axis.set(xlabel=f"GPUs ({GPUS_PER_HOST} a host)", ylabel="scaling efficiency %", title=workload.label,
                 ylim=(min(80, 10 * math.floor((lowest - 5) / 10)), 102))
        axis.legend(fontsize=7)
    save_figure(figure, path)


def parse_step_seconds(pairs):
    """``NAME=SECONDS`` pairs of ``--step-seconds``, checked against the workloads' names."""
    names = {w.name for w in WORKLOADS}
    measured = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        try:
            seconds = float(text)
        except ValueError:
            seconds = 0.0
        if name not in names or not seconds > 0:
            raise UserError(f"--step-seconds {pair!r}: give NAME=SECONDS with NAME one of {', '.join(sorted(names))} "
                            "and SECONDS > 0, the compute time of one step on one GPU")
        measured[name] = seconds
    return measured


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bandwidths", type=float, nargs="+", default=list(BANDWIDTHS_GBIT),
                        help="NIC speeds in Gbit/s, each direction (default 10 25 100)")
    parser.add_argument("--gpus", type=int, nargs="+", default=list(GPU_COUNTS),
                        help=f"GPU counts, multiples of {GPUS_PER_HOST} (default 8 16 32 64)")
    parser.add_argument("--overlap", type=float, default=1.0,
                        help="share of the backward pass that communication may hide under (default 1)")
    parser.add_argument("--ps-request-us", type=float, default=PS_REQUEST_SECONDS * 1e6,
                        help="a ps-lite process's cost per key part it handles, microseconds (default %(default)g, "
                             "assumed; the loopback calibration measures it)")
    parser.add_argument("--software-gbytes-per-s", type=float, default=math.inf,
                        help="GB/s a ps-lite process moves in each direction (default: unlimited; the loopback "
                             "calibration measures it)")
    parser.add_argument("--ring-step-us", type=float, default=RING_STEP_SECONDS * 1e6,
                        help="latency of one ring-allreduce step, microseconds (default %(default)g, assumed)")
    parser.add_argument("--allreduce", choices=("flat", "hierarchical"), default="flat",
                        help="ring of all GPUs (default) or, as Horovod's --hierarchical-allreduce, of the hosts")
    parser.add_argument("--step-seconds", nargs="+", default=[], metavar="NAME=SECONDS",
                        help="replace a row's published compute time per step with one you measured")
    parser.add_argument("--output-dir", help="write scaling_model.md, scaling_model.json and scaling_model.png here")
    return parser


def check_args(args):
    """Refuse values the model cannot use, in one line."""
    if not 0 <= args.overlap <= 1:
        raise UserError(f"--overlap {args.overlap:g} must be between 0 and 1 (a share of the backward pass)")
    if any(gpus < GPUS_PER_HOST or gpus % GPUS_PER_HOST for gpus in args.gpus):
        raise UserError(f"--gpus must be whole hosts of {GPUS_PER_HOST} GPUs: {args.gpus}")
    if any(not gbit > 0 for gbit in args.bandwidths) or not args.software_gbytes_per_s > 0:
        raise UserError("--bandwidths and --software-gbytes-per-s must be positive")
    if args.ps_request_us < 0 or args.ring_step_us < 0:
        raise UserError("--ps-request-us and --ring-step-us must not be negative")


def links_from(args, gbit):
    return Links(link_bytes_per_sec(gbit), ps_request_seconds=args.ps_request_us * 1e-6,
                 software_bytes_per_sec=args.software_gbytes_per_s * 1e9, ring_step_seconds=args.ring_step_us * 1e-6,
                 hierarchical=args.allreduce == "hierarchical")


def predict_all(networks, args):
    """results[workload][backend][bandwidth] = the predictions for each GPU count."""
    return {w.name: {backend: {f"{gbit:g}": [predict(networks[w.name], backend, gpus, links_from(args, gbit),
                                                     args.overlap) for gpus in args.gpus] for gbit in args.bandwidths}
                     for backend in w.backends} for w in WORKLOADS}


def bandwidths_for_target(networks, args, gpus):
    """needed[workload][backend][overlap] = the NIC Gbit/s for 90% on ``gpus`` GPUs (ResNet-50-D rows), at the
    chosen overlap and without overlap."""
    overlaps = sorted({args.overlap, 0.0}, reverse=True)
    return {w.name: {backend: {f"overlap {overlap:g}": bandwidth_for(networks[w.name], backend, gpus,
                                                                     links_from(args, 1.0), overlap)
                               for overlap in overlaps} for backend in w.backends}
            for w in WORKLOADS if w.model == "resnet50_v1d"}


def report(args, networks, results, needed, gpus, command):
    """The Markdown report: the command, settings, inputs, the table and the bandwidths for 90%."""
    software = ("no per-byte cost (not calibrated)" if math.isinf(args.software_gbytes_per_s)
                else f"{args.software_gbytes_per_s:g} GB/s a process")
    request_assumed = " (assumed)" if args.ps_request_us == PS_REQUEST_SECONDS * 1e6 else ""
    ring_assumed = " (assumed)" if args.ring_step_us == RING_STEP_SECONDS * 1e6 else ""
    lines = [f"`{command}`", "",
             f"Scaling model: efficiency (images/s) per GPU count, {GPUS_PER_HOST} GPUs a host, overlap "
             f"{args.overlap:g} of the backward pass; ps-lite: {args.ps_request_us:g} us a request{request_assumed}, "
             f"{software}; ring ({args.allreduce}): {args.ring_step_us:g} us a step{ring_assumed}.", "",
             *inputs_table(WORKLOADS, networks), "", *model_table(WORKLOADS, results, args.bandwidths, args.gpus), "",
             f"NIC bandwidth for >= {100 * TARGET_EFFICIENCY:.0f}% efficiency on {gpus} GPUs "
             f"({gpus // GPUS_PER_HOST} hosts of {GPUS_PER_HOST}):", ""]
    for name, backends in needed.items():
        for backend, by_overlap in backends.items():
            text = ", ".join(f"{'not reachable' if gbit is None else f'{gbit:.1f} Gbit/s'} ({overlap})"
                             for overlap, gbit in by_overlap.items())
            lines.append(f"- {name}, {backend}: {text}")
    return lines


@command_line_entry
def main(argv=None):
    args = build_parser().parse_args(argv)
    check_args(args)
    measured = parse_step_seconds(args.step_seconds)
    networks = {w.name: build_network(w, measured.get(w.name)) for w in WORKLOADS}
    results = predict_all(networks, args)
    most_gpus = max(args.gpus)
    needed = bandwidths_for_target(networks, args, most_gpus)
    command = shlex.join(["python", "-m", "benchmarks.scaling_model", *(sys.argv[1:] if argv is None else argv)])
    lines = report(args, networks, results, needed, most_gpus, command)
    print("\n".join(lines))
    if args.output_dir:
        settings = {name: value for name, value in vars(args).items() if name != "output_dir"}
        if math.isinf(args.software_gbytes_per_s):
            settings["software_gbytes_per_s"] = None  # unlimited; JSON has no infinity
        write_report(args.output_dir, "scaling_model", "\n".join(lines),
                     dict(settings=settings, step_seconds={n: networks[n].step_seconds for n in networks},
                          model_bytes={n: networks[n].model_bytes for n in networks}, results=results,
                          bandwidth_for_90_percent=needed))
        plot(WORKLOADS, results, args.bandwidths, args.gpus, os.path.join(args.output_dir, "scaling_model.png"))


if __name__ == "__main__":
    sys.exit(main())
