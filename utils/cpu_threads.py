"""MXNet's CPU operator threads: one per physical core, set before MXNet is imported.

MXNet 1.9.1 sizes the OpenMP pool of its CPU operators once, when the library loads: half the logical CPUs
on x86, on the assumption that every core runs two hyperthreads (``src/engine/openmp.cc``). On a machine
without hyperthreading, as most small cloud VMs are, that leaves half the cores idle (docs/training.md,
*Section 2*, gives the speed-up measured). MXNet reads ``MXNET_OMP_MAX_THREADS`` (or the standard ``OMP_NUM_THREADS``)
instead when it is set, so the entry scripts set it to the number of physical cores first; on a machine
with two hyperthreads per core that is MXNet's own choice, and a value the user set is never changed.
"""
import os
import sys

THREADS_VARIABLE = "MXNET_OMP_MAX_THREADS"
USER_VARIABLES = (THREADS_VARIABLE, "OMP_NUM_THREADS")


def physical_cores(cpus=None, sysfs="/sys/devices/system/cpu"):
    """Distinct physical cores among ``cpus`` (default: the CPUs this process may run on), or None if unknown."""
    cpus = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
    cores = set()
    for cpu in cpus:
        topology = os.path.join(sysfs, f"cpu{cpu}", "topology")
        try:
            with open(os.path.join(topology, "physical_package_id")) as package, \
                    open(os.path.join(topology, "core_id")) as core:
                cores.add((package.read().strip(), core.read().strip()))
        except OSError:
            return None
    return len(cores) or None


def use_physical_cores(environ=os.environ, cores=None):
    """Set ``MXNET_OMP_MAX_THREADS`` to the physical core count, unless the user chose a thread count.

    Must run before ``import mxnet`` (MXNet reads it once, when it loads). Returns the count it set, or None
    when it left the environment alone.
    """
    if any(name in environ for name in USER_VARIABLES) or "mxnet" in sys.modules:
        return None
    cores = cores if cores is not None else physical_cores()
    if cores is None:
        return None
    environ[THREADS_VARIABLE] = str(cores)
    return cores


def describe_cpu_threads(environ=os.environ):
    """The thread count MXNet's CPU operators were given, and by which variable, for the log."""
    for name in USER_VARIABLES:
        if name in environ:
            return f"{environ[name]} ({name})"
    return "MXNet's default (half the logical CPUs on x86)"
