"""The communication model's arithmetic against numbers worked out by hand, and the inputs it takes from our
networks (benchmarks/scaling_model.py, benchmarks/ps_lite_calibration.py)."""
import json
import math

import pytest

from benchmarks import ps_lite_calibration as calibration
from benchmarks import scaling_model as model

MB = 1e6
# 100 keys of 1 MB (250,000 FP32 elements, below the split bound): key k goes to server (k * 9973) % 4 = k % 4,
# so 4 servers hold 25 MB each.
TOY_KEYS = tuple((key, 250000) for key in range(100))


def toy_network(step_seconds=0.3):
    return model.Network(TOY_KEYS, gradient_bytes=4, step_seconds=step_seconds, batch_per_gpu=32)


def links(nic_bytes_per_sec, request_seconds=0.0, software_bytes_per_sec=math.inf, ring_step_seconds=0.0,
          hierarchical=False):
    return model.Links(nic_bytes_per_sec, request_seconds, software_bytes_per_sec, ring_step_seconds, hierarchical)


def test_small_keys_go_whole_to_one_server_and_big_ones_are_split_over_all():
    keys = [(0, 10), (1, 20), (2, 3000001)]
    # 0 * 9973 % 2 = 0, 9973 % 2 = 1; 3,000,001 / 2 = 1,500,000.5 rounds away from zero, as C's round.
    assert model.server_loads(keys, 2) == ([10 + 1500001, 20 + 1500000], [2, 2])
    assert model.server_loads(keys, 1) == ([3000031], [3])
    assert sum(model.split_sizes(2359296, 8)) == 2359296


def test_a_hosts_nic_carries_its_workers_remote_pushes_and_its_servers_remote_replies():
    # 100 MB model, 4 hosts, 25 MB a server: 75 MB to the other servers, 3 x 25 MB of replies = 150 MB,
    # the ring's 2 (H - 1) / H of the model.
    assert model.ps_lite_nic_bytes(100 * MB, 25 * MB, 4) == pytest.approx(150 * MB)
    assert model.ring_bytes(100 * MB, 4) == pytest.approx(150 * MB)
    # An unbalanced server costs its host more: 100 - 40 + 3 x 40.
    assert model.ps_lite_nic_bytes(100 * MB, 40 * MB, 4) == pytest.approx(180 * MB)
    assert model.ps_lite_nic_bytes(100 * MB, 100 * MB, 1) == 0


def test_2_bit_pushes_shrink_16_fold_and_the_weights_come_back_whole():
    # The balanced 4 hosts above: 75 MB of pushes / 16 + 3 x 25 MB of weights, in each direction, instead of 150 MB.
    assert model.ps_lite_nic_bytes(100 * MB, 25 * MB, 4, compression_factor=16) == pytest.approx(79.6875 * MB)
    # Unbalanced, the busier direction counts: out 60 / 16 + 120, in 120 / 16 + 60.
    assert model.ps_lite_nic_bytes(100 * MB, 40 * MB, 4, compression_factor=16) == pytest.approx(123.75 * MB)
    network = model.Network(TOY_KEYS, gradient_bytes=4, step_seconds=0.3, batch_per_gpu=32, compression_factor=16)
    assert (network.model_bytes, network.pushed_bytes) == pytest.approx((100 * MB, 6.25 * MB))
    # 79.6875 MB over 1 GB/s; the servers' 1 ms a request still lead at 2 ms (0.2 s), as without compression.
    assert model.ps_lite_seconds(network, 4, links(1e9)) == pytest.approx(0.0796875)
    assert model.ps_lite_seconds(network, 4, links(1e9, request_seconds=2e-3)) == pytest.approx(0.2)
    workload = next(w for w in model.WORKLOADS if w.name == "r50d-fp32-2bit")
    assert (workload.compression_factor, workload.backends) == (16, ("ps-lite",))


def test_ps_lite_step_is_its_busiest_nic_server_or_worker():
    network = toy_network()
    assert network.model_bytes == pytest.approx(100 * MB)
    # 32 GPUs = 4 hosts: 150 MB over 1 GB/s.
    assert model.ps_lite_seconds(network, 4, links(1e9)) == pytest.approx(0.15)
    # 1 ms a request: each server handles 4 workers x 25 keys (0.1 s), each worker 100 keys (0.1 s): the NIC leads;
    # at 2 ms the servers (0.2 s) do.
    assert model.ps_lite_seconds(network, 4, links(1e9, request_seconds=1e-3)) == pytest.approx(0.15)
    assert model.ps_lite_seconds(network, 4, links(1e9, request_seconds=2e-3)) == pytest.approx(0.2)
    # A process moving 0.5 GB/s: each server receives 4 x 25 MB (0.2 s), each worker sends 100 MB (0.2 s).
    assert model.ps_lite_seconds(network, 4, links(1e9, software_bytes_per_sec=0.5e9)) == pytest.approx(0.2)


def test_ring_allreduce_sends_2_n_minus_1_over_n_of_the_model_and_nothing_inside_one_host():
    network = toy_network()
    # 16 GPUs in one ring: 2 x 15 / 16 x 100 MB over 1 GB/s; of the 2 hosts: 2 x 1 / 2 x 100 MB.
    assert model.ring_seconds(network, 2, links(1e9)) == pytest.approx(0.1875)
    assert model.ring_seconds(network, 2, links(1e9, hierarchical=True)) == pytest.approx(0.1)
    # One 128 MB fusion buffer, 2 x 15 ring steps of 1 ms.
    assert model.ring_seconds(network, 2, links(1e9, ring_step_seconds=1e-3)) == pytest.approx(0.1875 + 0.030)
    assert model.ring_seconds(network, 1, links(1e9, ring_step_seconds=1e-3)) == 0


def test_communication_hides_under_the_backward_pass_up_to_the_overlap():
    # 0.3 s of compute, 0.2 s of it backward; 0.1 s of communication.
    assert model.step_seconds(0.3, 0.1, overlap=1.0) == pytest.approx(0.3)
    assert model.step_seconds(0.3, 0.1, overlap=0.25) == pytest.approx(0.35)
    assert model.step_seconds(0.3, 0.1, overlap=0.0) == pytest.approx(0.4)
    assert model.step_seconds(0.3, 0.5, overlap=1.0) == pytest.approx(0.6)


def test_infinite_bandwidth_and_no_latency_scale_perfectly():
    for backend in model.BACKENDS:
        for gpus in (8, 16, 64):
            result = model.predict(toy_network(), backend, gpus, links(math.inf), overlap=0.0)
            assert result["efficiency"] == 1.0
            assert result["images_per_sec"] == pytest.approx(gpus * 32 / 0.3)


def test_the_90_percent_bandwidth_inverts_the_efficiency():
    network = toy_network()
    # Without overlap or latency, 90% means comm = compute / 9: 64 GPUs in a ring send 2 x 63 / 64 x 100 MB.
    gbit = model.bandwidth_for(network, "allreduce", 64, links(1.0), overlap=0.0)
    assert gbit == pytest.approx(2 * 63 / 64 * 100 * MB / (0.3 / 9) * 8 / 1e9, rel=1e-6)
    for backend in model.BACKENDS:
        gbit = model.bandwidth_for(network, backend, 64, links(1.0, request_seconds=1e-5), overlap=0.5)
        at, below = (model.predict(network, backend, 64, links(model.link_bytes_per_sec(speed), request_seconds=1e-5),
                                   overlap=0.5)["efficiency"] for speed in (gbit, 0.99 * gbit))
        assert at == pytest.approx(0.9, abs=1e-6) and below < 0.9
    # No NIC buys back the servers' requests: 100 keys over 8 servers put 13 on the busiest, which handles them for
    # 8 workers at 1 ms each, 104 ms a step: 0.3 / 0.404 = 74%.
    assert model.bandwidth_for(network, "ps-lite", 64, links(1.0, request_seconds=1e-3), overlap=0.0) is None


def test_keys_and_parameter_counts_are_the_networks_own():
    import mxnet as mx
    from models import get_model
    from models.complexity import count_parameters
    for name, arrays, parameters in (("resnet50_v1d", 167, 25576264), ("mobilenet1.0", 83, 4231976)):
        keys = model.gradient_keys(name)
        net = get_model(name, classes=1000)
        net.initialize(mx.init.Zero())
        net(mx.nd.zeros((1, 3, 32, 32)))
        assert len(keys) == arrays
        assert sum(size for _, size in keys) == count_parameters(net) == parameters
    # Keys number every parameter of the Trainer: conv0's weight, BatchNorm's gamma and beta, then its running
    # mean and variance (never pushed) take keys 3 and 4.
    assert [key for key, _ in model.gradient_keys("resnet50_v1d")[:4]] == [0, 1, 2, 5]


def test_a_measured_step_time_replaces_the_published_one(capsys):
    workload = next(w for w in model.WORKLOADS if w.name == "r50d-fp16")
    network = model.build_network(workload, step_seconds=0.5)
    assert (network.step_seconds, network.gradient_bytes, network.model_bytes) == (0.5, 2, 2 * 25576264)
    assert model.main(["--step-seconds", "r50d-fp17=0.5"]) == 2
    assert capsys.readouterr().err.startswith("error: --step-seconds 'r50d-fp17=0.5': give NAME=SECONDS with NAME")
    assert model.main(["--overlap", "1.5"]) == 2
    assert capsys.readouterr().err == "error: --overlap 1.5 must be between 0 and 1 (a share of the backward pass)\n"


def test_the_report_table_json_and_plot(tmp_path):
    assert model.main(["--gpus", "8", "64", "--bandwidths", "10", "--output-dir", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "scaling_model.json").read_text())
    # ResNet-50-D in FP16 (51.2 MB) on 8 hosts at 10 Gbit/s: at most 1.92 x 51.2 MB / 1.25 GB/s = 79 ms of
    # communication, under its 132 ms backward pass.
    fp16 = saved["results"]["r50d-fp16"]["ps-lite"]["10"]
    assert [r["gpus"] for r in fp16] == [8, 64] and fp16[1]["efficiency"] == 1.0
    assert saved["step_seconds"]["r50d-fp16"] == pytest.approx(128 / (5169.373 / 8), rel=1e-4)
    assert set(saved["bandwidth_for_90_percent"]) == {"r50d-fp32", "r50d-fp16", "r50d-amp", "r50d-fp32-2bit"}
    # The compressed row is ps-lite's alone: 2-bit compression is the kvstore's.
    assert set(saved["results"]["r50d-fp32-2bit"]) == {"ps-lite"}
    assert set(saved["bandwidth_for_90_percent"]["r50d-fp32-2bit"]) == {"ps-lite"}
    assert "| ResNet-50-D, FP16 gradients (paper) | ps-lite | 10 | 100% (5,169) | 100% (41,355) |" in \
        (tmp_path / "scaling_model.md").read_text()
    assert (tmp_path / "scaling_model.png").stat().st_size > 0


def test_the_loopback_model_counts_every_process_and_the_cores():
    # 100 MB in 100 keys, 1 server, 2 workers, 1 GB/s a process: the server moves 2 x 100 MB, each worker 100 MB.
    assert model.loopback_seconds(TOY_KEYS, 4, 2, 1, 1e9, 0.0, cores=2) == pytest.approx(0.2)
    # On one core the three processes' 0.4 s of work add up.
    assert model.loopback_seconds(TOY_KEYS, 4, 2, 1, 1e9, 0.0, cores=1) == pytest.approx(0.4)
    # 1 ms a request: the server handles 2 x 100 requests.
    assert model.loopback_seconds(TOY_KEYS, 4, 2, 1, 1e9, 1e-3, cores=4) == pytest.approx(0.4)


def test_the_calibration_fit_recovers_the_costs_it_was_given():
    large = dict(keys=tuple((key, 3197033) for key in range(8)))
    small = dict(keys=tuple((key, 10000) for key in range(2557)))
    for job in (large, small):
        job["seconds"] = model.loopback_seconds(job["keys"], 4, 2, 1, 2e9, 80e-6, cores=2)
    software_bytes_per_sec, request_seconds = calibration.fit_loopback(large, small, cores=2)
    assert software_bytes_per_sec == pytest.approx(2e9, rel=1e-6)
    assert request_seconds == pytest.approx(80e-6, rel=1e-6)


def test_the_calibration_layouts_hold_resnet50_d_elements_in_few_or_many_keys():
    reference = sum(size for _, size in calibration.layout_keys("resnet50_v1d"))
    large, small = calibration.layout_keys("large-keys"), calibration.layout_keys("small-keys")
    assert sum(size for _, size in large) == reference == 25576264
    assert len(large) == 8 and min(size for _, size in large) >= model.BIGARRAY_BOUND
    assert len(small) == 2557 and {size for _, size in small} == {10000}
