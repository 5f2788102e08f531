"""Start a distributed training job on MXNet's parameter server (ps-lite): one scheduler, servers, workers.

The command line is that of MXNet's own ``tools/launch.py``::

    python tools/launch.py -n 2 -s 1 --launcher local python train_imagenet.py --kvstore dist_sync ...
    python tools/launch.py -n 4 -s 2 --launcher ssh -H hosts python train_imagenet.py --kvstore dist_sync ...

ps-lite learns its role and where the scheduler listens from ``DMLC_*`` environment variables; the scheduler
and the servers are plain ``python -c "import mxnet"`` processes (importing MXNet with ``DMLC_ROLE`` set to
``scheduler`` or ``server`` runs that role until the workers finish), the workers run COMMAND. Every line a
process prints comes out prefixed with its role and index. When any process exits non-zero, every process
group it started is stopped and the launcher exits non-zero, naming the process that died. SIGINT or SIGTERM to
the launcher (a scheduler's preemption) goes to the workers first, which stop after the same step and save a
checkpoint (``utils.distributed.Cluster.agree_to_stop``), while the servers they need stay up; after
``--stop-seconds`` whatever is left is stopped, and the launcher exits with 128 + the signal. A worker that
stopped on a signal of its own (exit 130 or 143) gives the others the same time. The worker index in the prefix
is the launch order; the kvstore rank that ps-lite assigns (and train_imagenet.py logs) may differ.

ps-lite has no authentication: anyone who reaches its ports can join the job, read and change the weights, and
run code on the servers. Run a job on a trusted network only, and pin it to that network with ``--interface``.
"""
import argparse
import dataclasses
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

LOOPBACK = "127.0.0.1"
DEFAULT_SSH_PORT = 9091
POLL_SECONDS = 0.1
GRACE_SECONDS = 5.0
# Exit statuses of a worker that stopped on SIGINT or SIGTERM after saving (utils.errors.Interrupted).
STOPPED_ON_SIGNAL = (128 + signal.SIGINT, 128 + signal.SIGTERM)
# A host file line names one machine: ssh takes it as its destination (and may hand it to a shell through a
# ProxyCommand's %h) and ps-lite the first as the scheduler's address, so a line must be a host name or an IPv4
# address, neither an option nor shell syntax.
HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
HOST_ADVICE = "give one host name or address a line (a user name or port goes in ~/.ssh/config)"


class SettingError(Exception):
    """A host file or setting the job cannot run with; the message names it (a host file's line by its number)."""


@dataclasses.dataclass
class Process:
    """One started process: its label for the output prefix, host and ``subprocess.Popen``."""

    label: str
    host: str
    popen: subprocess.Popen


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--num-workers", type=int, required=True, help="number of worker processes")
    parser.add_argument("-s", "--num-servers", type=int,
                        help="number of server processes (default: as many as workers)")
    parser.add_argument("--launcher", choices=("local", "ssh"), default="ssh",
                        help="local: every process on this machine, on 127.0.0.1; ssh: on the hosts of "
                             "--hostfile (default %(default)s, as in MXNet)")
    parser.add_argument("-H", "--hostfile", help="ssh: one host name or address a line; servers and workers "
                                                 "go round-robin over them, the scheduler on the first")
    parser.add_argument("--port", type=int, help="scheduler port (default: a free port for local, "
                                                 f"{DEFAULT_SSH_PORT} for ssh)")
    parser.add_argument("--interface", help="network interface (e.g. eth1) on whose address the servers and workers "
                                            "listen and announce themselves (ps-lite's DMLC_INTERFACE); ssh: it "
                                            "must exist on every host. Default: ssh, the first interface that is "
                                            "not loopback; local, 127.0.0.1")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter that runs the scheduler and servers (default: this one; for ssh it "
                             "must exist at the same path on every host)")
    parser.add_argument("--stop-seconds", type=float, default=60.0,
                        help="on SIGINT/SIGTERM, how long the workers get to finish their step and save before "
                             "everything is stopped (default %(default)s; keep it below the scheduler's time "
                             "between SIGTERM and SIGKILL)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the worker command")
    return parser


def read_hostfile(path):
    """Host names of ``path``, one a line; blank lines and ``#`` comments are skipped.

    Raises SettingError for a missing or unreadable file, one without a host, or a line that is not one host
    name or address (HOST_NAME).
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = [line.split("#", 1)[0].strip() for line in handle]
    except OSError as error:
        raise SettingError(f"cannot read host file {path}: {error.strerror}") from None
    hosts = []
    for number, host in enumerate(lines, start=1):
        if not host:
            continue
        if host.startswith("-"):
            raise SettingError(f"{path} line {number}: {host!r} starts with '-', which ssh would take for an "
                               f"option; {HOST_ADVICE}")
        if not HOST_NAME.fullmatch(host):
            raise SettingError(f"{path} line {number}: {host!r} is not a host name or IPv4 address (letters, "
                               f"digits, '.', '-' and '_'); {HOST_ADVICE}")
        hosts.append(host)
    if not hosts:
        raise SettingError(f"host file {path} lists no host")
    return hosts


def check_interface(name, launcher):
    """Raise SettingError unless ``name`` (``--interface``) can pin ps-lite to one interface.

    ps-lite takes the first interface whose name begins with ``name`` (``l`` picks ``lo``), and any interface for
    an empty one: so an empty name is refused, and with ``--launcher local`` a name that is not that of one of this
    machine's interfaces. An ssh job's hosts are not checked from here; ps-lite stops with "failed to get ip" on a
    host without the interface, which stops the job.
    """
    if name is None:
        return
    if not name:
        raise SettingError("--interface needs the name of a network interface, e.g. eth1")
    if launcher == "local":
        names = [interface for _, interface in socket.if_nameindex()]
        if name not in names:
            raise SettingError(f"--interface {name!r} is not a network interface of this machine, whose "
                               f"interfaces are {', '.join(names)}")


def free_port(host=LOOPBACK):
    """A port nobody listens on now (the scheduler binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def ps_environment(role, root_uri, port, num_servers, num_workers, node_host=None, interface=None):
    """The variables ps-lite reads: this process's role, the scheduler's address, the job's size.

    The scheduler listens on ``root_uri`` (DMLC_PS_ROOT_URI). A server or worker listens on and announces
    ``node_host`` (DMLC_NODE_HOST) if given, else the address of ``interface`` (DMLC_INTERFACE), else that of the
    first interface that is not loopback.
    """
    env = {"DMLC_ROLE": role, "DMLC_PS_ROOT_URI": root_uri, "DMLC_PS_ROOT_PORT": str(port),
           "DMLC_NUM_SERVER": str(num_servers), "DMLC_NUM_WORKER": str(num_workers)}
    if node_host:
        env["DMLC_NODE_HOST"] = node_host
    if interface:
        env["DMLC_INTERFACE"] = interface
    return env


def remote_command(env, command, workdir):
    """The one shell string ssh runs remotely: every part quoted, so no argument is read as shell syntax."""
    assignments = [f"{name}={value}" for name, value in sorted(env.items())]
    return f"cd {shlex.quote(workdir)} && exec env {shlex.join(assignments + list(command))}"


def ssh_argv(host, env, command, workdir):
    """ssh with a terminal (``-tt``), so that stopping the local ssh also hangs up the remote process.

    ``--`` ends ssh's options, so that no host is ever read as one.
    """
    return ["ssh", "-tt", "-o", "BatchMode=yes", "--", host, remote_command(env, command, workdir)]


def plan(args):
    """(label, host, argv, extra environment) of every process: scheduler first, then servers, then workers."""
    num_servers = args.num_servers if args.num_servers is not None else args.num_workers
    if args.launcher == "local":
        hosts, port = [LOOPBACK], args.port or free_port()
    else:
        hosts, port = read_hostfile(args.hostfile), args.port or DEFAULT_SSH_PORT
    root = hosts[0]
    roles = [("scheduler", "scheduler", root)]
    roles += [(f"server {i}", "server", hosts[i % len(hosts)]) for i in range(num_servers)]
    roles += [(f"worker {i}", "worker", hosts[i % len(hosts)]) for i in range(args.num_workers)]
    processes = []
    for label, role, host in roles:
        command = args.command if role == "worker" else [args.python, "-c", "import mxnet"]
        # One machine's job stays on loopback unless an interface is named.
        node_host = host if args.launcher == "local" and not args.interface else None
        env = ps_environment(role, root, port, num_servers, args.num_workers, node_host, args.interface)
        if args.launcher == "local":
            processes.append((label, host, list(command), env))
        else:
            processes.append((label, host, ssh_argv(host, env, command, os.getcwd()), {}))
    return processes


def _relay(process, lock):
    """Copy the process's output to ours, each line prefixed with its label."""
    for line in iter(process.popen.stdout.readline, b""):
        text = line.decode(errors="replace").rstrip("\r\n")
        with lock:
            print(f"[{process.label}] {text}", flush=True)
    process.popen.stdout.close()


def describe_exit(code):
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def wait_for(processes, seconds):
    """Wait up to ``seconds`` for ``processes`` to exit."""
    deadline = time.time() + seconds
    while any(p.popen.poll() is None for p in processes) and time.time() < deadline:
        time.sleep(POLL_SECONDS)


def signal_and_wait(processes, sig, seconds):
    """``sig`` to the process group of each of ``processes`` still running, then wait up to ``seconds`` for them."""
    running = [p for p in processes if p.popen.poll() is None]
    for process in running:
        try:
            os.killpg(process.popen.pid, sig)
        except ProcessLookupError:
            pass
    wait_for(running, seconds)


def stop_all(processes):
    """SIGTERM to every process group still running, SIGKILL to those left after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        signal_and_wait(processes, sig, GRACE_SECONDS)
    # Children that left the group's leader behind still hold the group id: make sure they are gone too.
    for process in processes:
        try:
            os.killpg(process.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class _Interrupted(Exception):
    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, _frame):
    raise _Interrupted(signum)


def _workers(processes):
    return [process for process in processes if process.label.startswith("worker")]


def stop_workers_first(processes, signum, seconds):
    """Pass ``signum`` to the workers, wait up to ``seconds`` for them to save and exit, then stop the rest."""
    signal_and_wait(_workers(processes), signum, seconds)
    stop_all(processes)


def supervise(processes, stop_seconds):
    """Wait for every process; on the first failure stop them all. Returns the launcher's exit code."""
    while True:
        failed = next((p for p in processes if p.popen.poll() not in (None, 0)), None)
        if failed is not None:
            if failed in _workers(processes) and failed.popen.returncode in STOPPED_ON_SIGNAL:
                wait_for(_workers(processes), stop_seconds)  # the others stop after the same step
            stop_all(processes)
            print(f"launch: {failed.label} (pid {failed.popen.pid}, host {failed.host}) "
                  f"{describe_exit(failed.popen.returncode)}; stopped all {len(processes)} processes",
                  file=sys.stderr, flush=True)
            return 1
        if all(p.popen.poll() == 0 for p in processes):
            return 0
        time.sleep(POLL_SECONDS)


def launch(args):
    lock = threading.Lock()
    processes, relays = [], []
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for label, host, argv, extra_env in plan(args):
            # A new session per process: its own process group, which stop_all signals as a whole.
            popen = subprocess.Popen(argv, env={**os.environ, **extra_env}, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            processes.append(Process(label, host, popen))
            relays.append(threading.Thread(target=_relay, args=(processes[-1], lock), daemon=True))
            relays[-1].start()
            print(f"launch: started {label} (pid {popen.pid}) on {host}", file=sys.stderr, flush=True)
        code = supervise(processes, args.stop_seconds)
    except _Interrupted as interrupt:
        try:
            stop_workers_first(processes, interrupt.signum, args.stop_seconds)
        except _Interrupted:  # a second signal: no more waiting
            stop_all(processes)
        print(f"launch: got {interrupt}; stopped all {len(processes)} processes", file=sys.stderr, flush=True)
        code = 128 + interrupt.signum
    except BaseException:
        stop_all(processes)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for relay in relays:
        relay.join(timeout=GRACE_SECONDS)
    return code


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.error("give the worker command after the options")
    if args.num_workers < 1 or (args.num_servers is not None and args.num_servers < 1):
        parser.error("-n and -s must be at least 1")
    if args.stop_seconds < 0:
        parser.error("--stop-seconds must be 0 or more")
    if args.launcher == "ssh" and not args.hostfile:
        parser.error("--launcher ssh needs -H HOSTFILE")
    try:
        check_interface(args.interface, args.launcher)
        if args.launcher == "ssh":
            read_hostfile(args.hostfile)
    except SettingError as error:
        print(f"launch: error: {error}", file=sys.stderr)
        return 2
    return launch(args)


if __name__ == "__main__":
    sys.exit(main())
