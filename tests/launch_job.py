"""``tools/launch.py`` (or ``horovodrun``) run from a test: a whole job on loopback, its output, and what it left
behind.

Every process the launcher starts inherits a unique marker variable, so a scan of /proc/*/environ finds any
process a test left behind, scheduler and servers included.
"""
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, "tools", "launch.py")
# Horovod's launcher, installed beside this Python when Horovod is (docs/multi-machine.md, "Horovod").
HOROVODRUN = os.path.join(os.path.dirname(sys.executable), "horovodrun")
MARKER_VARIABLE = "BAG_OF_TRICKS_TEST_MARKER"
TCP_LISTEN = "0A"  # a socket's state in /proc/net/tcp (the kernel's TCP_LISTEN, 10)


class Job:
    """``launcher`` (``tools/launch.py``, or ``HOROVODRUN``) running in the background, its merged output collected
    line by line."""

    def __init__(self, launcher_args, worker_command, launcher=LAUNCHER):
        self.marker = uuid.uuid4().hex
        env = {**os.environ, MARKER_VARIABLE: self.marker, "PYTHONUNBUFFERED": "1"}
        self.popen = subprocess.Popen([sys.executable, launcher, *launcher_args, *worker_command], cwd=REPO,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True)
        self.lines, self._queue = [], queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.popen.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, pattern, timeout):
        """The first output line matching ``pattern`` (earlier lines included), within ``timeout`` seconds."""
        regex = re.compile(pattern)
        deadline = time.time() + timeout
        for line in self.lines:
            if regex.search(line):
                return line
        while time.time() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if regex.search(line):
                return line
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines))

    def wait(self, timeout):
        """The launcher's exit code and whole output; kills everything the job started if it overruns."""
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_leftovers()
            os.killpg(self.popen.pid, signal.SIGKILL)
            raise
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return code, "\n".join(self.lines)

    def leftovers(self):
        """Pids of processes still carrying this job's marker."""
        needle = f"{MARKER_VARIABLE}={self.marker}".encode()
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    if needle in handle.read().split(b"\0"):
                        pids.append(int(entry))
            except OSError:
                continue
        return pids

    def listening_addresses(self):
        """``{pid: sorted IP addresses}`` on which each process of this job listens for TCP connections."""
        listening = _listening_sockets()
        addresses = {}
        for pid in self.leftovers():
            try:
                inodes = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
            except OSError:
                continue
            mine = sorted(address for inode, address in listening.items() if f"socket:[{inode}]" in inodes)
            if mine:
                addresses[pid] = mine
        return addresses

    def python_process(self, variable, value):
        """The pid of this job's Python process whose environment sets ``variable`` to ``value`` (e.g. a Horovod
        rank: ``HOROVOD_RANK``, ``"1"``), not the shell that started it."""
        for pid in self.leftovers():
            try:
                with open(f"/proc/{pid}/environ", "rb") as environ, open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    if f"{variable}={value}".encode() in environ.read().split(b"\0") and \
                            os.path.basename(cmdline.read().split(b"\0")[0]).startswith(b"python"):
                        return pid
            except OSError:
                continue
        raise AssertionError(f"no Python process of the job has {variable}={value}")

    def kill_leftovers(self):
        for pid in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _listening_sockets():
    """``{socket inode: IP address}`` of every TCP socket of this network namespace that listens, IPv4 and IPv6.

    /proc/net/tcp prints an address as the hexadecimal of each 32-bit word of it in the machine's byte order.
    """
    listening = {}
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        with open(table) as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                local_address, state, inode = fields[1], fields[3], fields[9]
                if state == TCP_LISTEN:
                    words = local_address.split(":")[0]
                    packed = b"".join(struct.pack("=I", int(words[i:i + 8], 16)) for i in range(0, len(words), 8))
                    listening[inode] = socket.inet_ntop(family, packed)
    return listening


def local_launch_args(num_workers=2, num_servers=1):
    return ["-n", str(num_workers), "-s", str(num_servers), "--launcher", "local"]


def needs_horovod():
    """Skip the calling test where Horovod is not built here; the README's test command builds it first."""
    pytest.importorskip("horovod.mxnet", reason="Horovod is not installed: python -m tools.install_horovod "
                                                "(docs/multi-machine.md, Horovod)")


def horovod_launch_args(num_ranks=2):
    """horovodrun's flags for ``num_ranks`` processes on this machine, over Gloo (the Horovod built here has no MPI)."""
    return ["-np", str(num_ranks), "-H", f"localhost:{num_ranks}", "--gloo"]
