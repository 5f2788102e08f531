"""Starting the trainer or another benchmark in a child process, whatever the child's working directory."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINER = os.path.join(REPO, "train_imagenet.py")


def benchmark_command(name, *args):
    """``python -m benchmarks.NAME ARGS`` with this interpreter."""
    return [sys.executable, "-m", f"benchmarks.{name}", *args]


def child_environment(environ=None, **variables):
    """``environ`` (default: this process's) with ``variables`` set and the repository first on PYTHONPATH.

    Children run in scratch folders, which keep the files that MXNet's profiler and GluonCV's script drop into
    the working directory out of the user's; from there ``-m benchmarks.NAME`` finds the package only through
    PYTHONPATH.
    """
    env = dict(os.environ if environ is None else environ, **variables)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (REPO, env.get("PYTHONPATH"))))
    return env
