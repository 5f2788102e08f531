"""MXNet's CPU thread count: one per physical core, never over a count the user chose."""
import os
import subprocess
import sys

from utils.cpu_threads import THREADS_VARIABLE, describe_cpu_threads, physical_cores, use_physical_cores

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_sysfs(root, topology):
    """``topology``: per logical CPU, its (package, core)."""
    for cpu, (package, core) in enumerate(topology):
        folder = root / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text(f"{package}\n")
        (folder / "core_id").write_text(f"{core}\n")
    return str(root)


def test_hyperthreads_count_once_and_packages_apart(tmp_path):
    # 2 packages x 2 cores x 2 hyperthreads: 8 logical CPUs, 4 physical cores (core ids repeat per package).
    topology = [(package, core) for package in (0, 1) for core in (0, 1) for _ in range(2)]
    sysfs = fake_sysfs(tmp_path, topology)
    assert physical_cores(range(8), sysfs) == 4
    assert physical_cores([0, 1], sysfs) == 1  # two hyperthreads of one core
    assert physical_cores([0, 2, 4], sysfs) == 3


def test_without_hyperthreads_every_cpu_is_a_core(tmp_path):
    assert physical_cores([0, 1], fake_sysfs(tmp_path, [(0, 0), (0, 1)])) == 2


def test_unknown_topology_gives_none(tmp_path):
    assert physical_cores([0, 1], str(tmp_path)) is None


def test_sets_the_count_only_when_the_user_did_not(monkeypatch):
    monkeypatch.delitem(sys.modules, "mxnet", raising=False)
    environ = {}
    assert use_physical_cores(environ, cores=2) == 2
    assert environ == {THREADS_VARIABLE: "2"}
    assert describe_cpu_threads(environ) == f"2 ({THREADS_VARIABLE})"
    for chosen in ({THREADS_VARIABLE: "3"}, {"OMP_NUM_THREADS": "1"}):
        environ = dict(chosen)
        assert use_physical_cores(environ, cores=2) is None
        assert environ == chosen
    assert describe_cpu_threads({"OMP_NUM_THREADS": "1"}) == "1 (OMP_NUM_THREADS)"


def test_too_late_once_mxnet_is_loaded():
    import mxnet  # noqa: F401  (loaded: its thread pool is sized already)
    environ = {}
    assert use_physical_cores(environ, cores=2) is None
    assert environ == {}


def test_the_training_script_sets_it_before_mxnet_loads():
    environ = {k: v for k, v in os.environ.items() if k not in ("MXNET_OMP_MAX_THREADS", "OMP_NUM_THREADS")}
    probe = ("import os, train_imagenet, mxnet; from utils.cpu_threads import physical_cores; "
             "print(os.environ.get('MXNET_OMP_MAX_THREADS'), physical_cores())")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=environ, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == out[1] and int(out[0]) >= 1
