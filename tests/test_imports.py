"""The package's layering: import-linter contracts, a headless run without GUI packages,
the protocol's plain-data rule, and the napari manifest."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import napari_hybridseg

PACKAGE = Path(napari_hybridseg.__file__).parent
ROOT = PACKAGE.parent


def test_import_linter_contracts_hold():
    """The contracts in pyproject.toml: the core never imports napari or Qt, the protocol
    only NumPy, nothing imports upward."""
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "3 kept, 0 broken" in out.stdout


def test_protocol_imports_only_numpy_and_the_standard_library():
    tree = ast.parse((PACKAGE / "protocol.py").read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"protocol.py imports a module of the package: {node.module}"
            roots.add(node.module.split(".")[0])
    assert roots, "no imports found: the check would pass vacuously"
    assert all(r == "numpy" or r in sys.stdlib_module_names for r in roots), roots


def test_training_script_runs_without_gui_packages(tmp_path):
    """A headless train + predict must not pull in napari or Qt."""
    code = (
        "import sys\n"
        "from napari_hybridseg.cli import main\n"
        f"main(['sample', r'{tmp_path / 'p'}', '--n-images', '3', '--size', '48', '--strong-fraction', '0.34'])\n"
        f"rc = main(['train', r'{tmp_path / 'p'}', '--out', r'{tmp_path / 'r'}', '--steps', '2', '--batch-size', '2',"
        " '--patch-size', '32', '--width', '4', '--depth', '2', '--quiet', '--method', 'dii'])\n"
        "assert rc == 0, rc\n"
        f"rc = main(['predict', r'{tmp_path / 'r'}', r'{tmp_path / 'p' / 'images'}', '--out', r'{tmp_path / 'o'}'])\n"
        "assert rc == 0, rc\n"
        "gui = ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'vispy')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(gui)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _manifest_commands():
    from importlib.resources import files

    manifest = yaml.safe_load(files(napari_hybridseg).joinpath("napari.yaml").read_text())
    return [c["python_name"] for c in manifest["contributions"]["commands"]]


@pytest.mark.parametrize("python_name", _manifest_commands())
def test_manifest_command_imports(python_name):
    import importlib

    module, attr = python_name.split(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_manifest_is_valid_npe2():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-hybridseg")
    assert manifest.name == "napari-hybridseg"
    assert {r.command for r in manifest.contributions.readers} == {"napari-hybridseg.get_reader"}


def test_no_module_is_over_long():
    """One concept per module: none grows past about 300 lines."""
    long = {
        str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 320
    }
    assert not long, long
