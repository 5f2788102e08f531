"""The house rules that keep the code easy to change: libraries never import an entry script."""
import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_SCRIPTS = {"train_imagenet", "eval_imagenet", "predict"}
LIBRARIES = ("engine", "models", "data", "utils", "benchmarks", "tools")


def _imported_modules(path):
    tree = ast.parse(open(path).read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def _library_files():
    for package in LIBRARIES:
        for folder, _, names in os.walk(os.path.join(REPO, package)):
            yield from (os.path.join(folder, name) for name in sorted(names) if name.endswith(".py"))


@pytest.mark.parametrize("path", sorted(_library_files()), ids=lambda path: os.path.relpath(path, REPO))
def test_no_library_module_imports_an_entry_script(path):
    imported = {name.split(".")[0] for name in _imported_modules(path)}
    assert not imported & ENTRY_SCRIPTS, f"{os.path.relpath(path, REPO)} imports {sorted(imported & ENTRY_SCRIPTS)}"


def test_the_walk_sees_an_entry_script_import(tmp_path):
    script = tmp_path / "uses_the_script.py"
    script.write_text("import os\nfrom train_imagenet import main\nimport eval_imagenet as evaluation\n")
    assert {"os", "train_imagenet", "eval_imagenet"} == set(_imported_modules(str(script)))
