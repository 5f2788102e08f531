"""Runs ``python`` commands one after another in this one interpreter, each as ``python`` would run it alone, for
tests/test_readme_commands.py: most of a command's second goes into MXNet's import, which they share here.

    python -m tests.run_commands COMMANDS.json RESULTS.json

COMMANDS.json lists each command's words after ``python`` (``["train_imagenet.py", "--num-gpus", "8"]``, ``["-m",
"benchmarks.throughput", "--help"]``); RESULTS.json gets ``[exit status, stdout, stderr]`` for each, in order. A
command runs as ``__main__`` with its own ``sys.argv``, its standard output and error (the file descriptors, so
MXNet's own C++ messages too) going to files of its own; an exception that escapes it is printed as Python prints
it, with exit status 1.
"""
import json
import os
import runpy
import sys
import tempfile
import traceback


def _exit_status(code):
    """The status ``sys.exit(code)`` gives a process: None is 0, a message goes to stderr as 1."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def _run_as_main(words):
    saved_argv, saved_path = sys.argv, list(sys.path)
    try:
        if words[0] == "-m":
            sys.argv = [words[1], *words[2:]]  # run_module puts the module's path first, as python -m does
            runpy.run_module(words[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(words)
            sys.path[0] = os.path.dirname(os.path.abspath(words[0]))  # as python puts a script's folder first
            runpy.run_path(words[0], run_name="__main__")
        return 0
    except SystemExit as stop:
        return _exit_status(stop.code)
    except Exception:  # as python ends a script that raises
        traceback.print_exc()
        return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


def run(words, folder):
    """``python WORDS...`` here: its exit status, standard output and standard error."""
    streams = [os.path.join(folder, name) for name in ("stdout", "stderr")]
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        for fd, path in zip((1, 2), streams):
            with open(path, "wb") as handle:
                os.dup2(handle.fileno(), fd)
        status = _run_as_main(words)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
    texts = []
    for path in streams:
        with open(path, errors="replace") as handle:
            texts.append(handle.read())
    return [status, *texts]


def main(commands_path, results_path):
    with open(commands_path) as handle:
        commands = json.load(handle)
    with tempfile.TemporaryDirectory() as folder:
        results = [run(words, folder) for words in commands]
    with open(results_path, "w") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main(*sys.argv[1:])
