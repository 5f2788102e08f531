"""The machine every benchmark figure is stated with."""
import os
import re
import subprocess


def cpu_model():
    """The CPU's model name as ``lscpu`` prints it (Python's ``platform`` often knows only ``x86_64``)."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return re.search(r"^Model name:\s*(.+)$", lscpu, re.M).group(1).strip()
    except (OSError, subprocess.CalledProcessError, AttributeError):
        return "unknown CPU"


def describe(**versions):
    """CPU model, core count and the given library versions, as one dict."""
    return dict(cpu=cpu_model(), cores=os.cpu_count(), **versions)
