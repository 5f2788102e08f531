"""``python -m tools.install_horovod``: build Horovod with MXNet and Gloo against the MXNet installed here.

Horovod ships as source and compiles against the MXNet it finds, so it cannot be one of setup.cfg's extras: pip
builds every package of a command in an isolated environment before it installs any, where Horovod's build stops
at "Could NOT find Mxnet" (horovod/horovod#3455). This installs the build's prerequisites, then builds Horovod
outside the isolation with MXNet and Gloo (no MPI, TensorFlow or PyTorch), and checks that ``horovod.mxnet``
imports with Gloo; the versions are setup.cfg's ``[horovod]`` section. When that Horovod is installed already it
does nothing. GPU clusters add ``--gpu-operations nccl`` (NCCL installed; not tried on this project's CPU VMs).
"""
import argparse
import configparser
import os
import shutil
import subprocess
import sys

from utils.errors import UserError, command_line_entry

SETUP_CFG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.cfg")
# Without these, Horovod's build tries every framework it can find and MPI if an mpicxx is on PATH.
BUILD_ENVIRONMENT = {"HOROVOD_WITH_MXNET": "1", "HOROVOD_WITH_GLOO": "1", "HOROVOD_WITHOUT_TENSORFLOW": "1",
                     "HOROVOD_WITHOUT_PYTORCH": "1", "HOROVOD_WITHOUT_MPI": "1"}
# Prints the installed version when horovod.mxnet imports and can run over Gloo, else exits non-zero.
CHECK_BUILD = ("import horovod, horovod.mxnet as hvd, sys; "
               "sys.exit('built without Gloo') if not hvd.gloo_built() else print(horovod.__version__)")


def pinned_requirements(setup_cfg=SETUP_CFG):
    """(prerequisites, horovod): the pip requirements of setup.cfg's ``[horovod]`` section."""
    parser = configparser.ConfigParser()
    parser.read(setup_cfg)
    section = parser["horovod"]
    return section["prerequisites"].split(), section["horovod"].strip()


def installed_horovod(python=sys.executable):
    """The version of the Horovod that imports with MXNet and Gloo under ``python``, or None."""
    result = subprocess.run([python, "-c", CHECK_BUILD], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def check_build_tools():
    """Horovod's build needs MXNet installed, cmake and a C++ compiler: one line naming what is missing."""
    try:
        import mxnet  # noqa: F401
    except ImportError:
        raise UserError("MXNet is not installed in this environment: install the project first "
                        "(pip install -e .), then run python -m tools.install_horovod") from None
    compiler = os.environ.get("CXX", "c++")
    missing = [tool for tool in ("cmake", compiler) if shutil.which(tool) is None]
    if missing:
        raise UserError(f"Horovod compiles from source and needs {' and '.join(missing)} on PATH: install cmake "
                        "(>= 3.13; pip install cmake works) and a C++14 compiler (e.g. apt-get install g++), "
                        "or set CXX to yours")


def pip(*arguments, environment=None):
    command = [sys.executable, "-m", "pip", "install", *arguments]
    print("+", " ".join(command), flush=True)
    if subprocess.run(command, env=environment).returncode != 0:
        raise UserError(f"`{' '.join(command[2:])}` failed (its output is above); docs/multi-machine.md, Horovod, "
                        "lists what the build needs")


@command_line_entry
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.install_horovod", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu-operations", choices=["nccl"],
                        help="build Horovod's GPU allreduce on NCCL (HOROVOD_GPU_OPERATIONS=NCCL) for mxnet-cu112")
    args = parser.parse_args(argv)
    prerequisites, horovod = pinned_requirements()
    version = horovod.split("==")[1]
    if installed_horovod() == version and not args.gpu_operations:
        print(f"Horovod {version} with MXNet and Gloo is installed already")
        return
    check_build_tools()
    pip(*prerequisites)
    environment = {**os.environ, **BUILD_ENVIRONMENT}
    if args.gpu_operations:
        environment["HOROVOD_GPU_OPERATIONS"] = args.gpu_operations.upper()
    # A cached wheel may have been built against another MXNet, and an installed Horovod without MXNet support
    # would count as "already satisfied"; its dependencies are among the prerequisites.
    pip("--no-cache-dir", "--no-build-isolation", "--force-reinstall", "--no-deps", horovod, environment=environment)
    built = installed_horovod()
    if built != version:
        raise UserError(f"Horovod {version} installed but horovod.mxnet does not import with Gloo here "
                        f"({built or 'import failed'}); run `horovodrun --check-build` to see what it was built with")
    print(f"Horovod {version} built with MXNet and Gloo")


if __name__ == "__main__":
    sys.exit(main())
