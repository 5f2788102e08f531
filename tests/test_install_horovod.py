"""python -m tools.install_horovod: the build's two pip steps, its checks, and its one-line errors (the build itself
runs in the README's test command, before the tests)."""
import os

import pytest

from tests.helpers import REPO
from tools import install_horovod


def test_the_versions_come_from_setup_cfgs_horovod_section():
    prerequisites, horovod = install_horovod.pinned_requirements()
    assert horovod == "horovod==0.28.1"
    assert [requirement.split("==")[0] for requirement in prerequisites] == \
        ["setuptools", "wheel", "packaging", "cloudpickle", "psutil"]
    assert all("==" in requirement for requirement in prerequisites)


def test_it_builds_outside_pips_isolation_with_mxnet_and_gloo_then_checks_the_import(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(install_horovod, "pip", lambda *arguments, environment=None: calls.append(
        (arguments, environment)))
    answers = iter([None, "0.28.1"])
    monkeypatch.setattr(install_horovod, "installed_horovod", lambda: next(answers))
    monkeypatch.setenv("HOROVOD_GPU_OPERATIONS", "")
    assert install_horovod.main([]) == 0
    (prerequisites, no_environment), (build, environment) = calls
    assert prerequisites == tuple(install_horovod.pinned_requirements()[0]) and no_environment is None
    assert build == ("--no-cache-dir", "--no-build-isolation", "--force-reinstall", "--no-deps", "horovod==0.28.1")
    assert {name: environment[name] for name in environment if name.startswith("HOROVOD_")} == {
        "HOROVOD_WITH_MXNET": "1", "HOROVOD_WITH_GLOO": "1", "HOROVOD_WITHOUT_TENSORFLOW": "1",
        "HOROVOD_WITHOUT_PYTORCH": "1", "HOROVOD_WITHOUT_MPI": "1", "HOROVOD_GPU_OPERATIONS": ""}
    assert capsys.readouterr().out.endswith("Horovod 0.28.1 built with MXNet and Gloo\n")


def test_nothing_is_built_when_that_horovod_is_installed(monkeypatch, capsys):
    monkeypatch.setattr(install_horovod, "installed_horovod", lambda: "0.28.1")
    monkeypatch.setattr(install_horovod, "pip", lambda *arguments, **_: pytest.fail("pip ran"))
    assert install_horovod.main([]) == 0
    assert capsys.readouterr().out == "Horovod 0.28.1 with MXNet and Gloo is installed already\n"


def test_missing_build_tools_are_named_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(install_horovod, "installed_horovod", lambda: None)
    monkeypatch.setattr(install_horovod.shutil, "which", lambda tool: None if tool == "cmake" else "/usr/bin/" + tool)
    assert install_horovod.main([]) == 2
    assert capsys.readouterr().err == (
        "error: Horovod compiles from source and needs cmake on PATH: install cmake (>= 3.13; pip install cmake "
        "works) and a C++14 compiler (e.g. apt-get install g++), or set CXX to yours\n")


def test_a_build_that_does_not_import_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(install_horovod, "pip", lambda *arguments, **_: None)
    monkeypatch.setattr(install_horovod, "installed_horovod", lambda: None)
    assert install_horovod.main([]) == 2
    assert capsys.readouterr().err == (
        "error: Horovod 0.28.1 installed but horovod.mxnet does not import with Gloo here (import failed); run "
        "`horovodrun --check-build` to see what it was built with\n")


def test_the_readme_test_command_builds_horovod_before_the_tests():
    with open(os.path.join(REPO, "README.md")) as handle:
        readme = handle.read()
    test_command = next(line for line in readme.splitlines() if line.startswith("pip install -e '.[test]'"))
    assert test_command.startswith("pip install -e '.[test]' && python -m tools.install_horovod && flake8 && pytest ")
