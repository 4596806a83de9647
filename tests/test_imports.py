"""Compute modules must stay importable without napari or Qt."""

import subprocess
import sys

import pytest
import yaml

import napari_hybridseg

COMPUTE = [
    "annotations",
    "atomic",
    "bridge",
    "cli",
    "config",
    "dcr",
    "dii",
    "errors",
    "evaluate",
    "events",
    "images",
    "losses",
    "modelfile",
    "networks",
    "nifti",
    "predict",
    "preprocess",
    "sampling",
    "synthetic",
    "targets",
    "trainer",
    "_reader",
    "_writer",
    "_sample_data",
]


def test_compute_modules_do_not_load_napari_or_qt():
    mods = ", ".join(f"napari_hybridseg.{m}" for m in COMPUTE)
    code = (
        f"import sys, importlib\n"
        f"for m in '{mods}'.split(', '): importlib.import_module(m)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'vispy')]\n"
        "print(','.join(sorted(set(b.split('.')[0] for b in bad))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"GUI packages loaded by compute modules: {out.stdout}"


def test_training_script_runs_without_gui_packages(tmp_path):
    """A headless train + predict must not pull in napari either."""
    code = (
        "import sys\n"
        "from napari_hybridseg.cli import main\n"
        f"main(['sample', r'{tmp_path / 'p'}', '--n-images', '3', '--size', '48', '--strong-fraction', '0.34'])\n"
        f"rc = main(['train', r'{tmp_path / 'p'}', '--out', r'{tmp_path / 'r'}', '--steps', '2', '--batch-size', '2',"
        " '--patch-size', '32', '--width', '4', '--depth', '2', '--quiet', '--method', 'dii'])\n"
        "assert rc == 0, rc\n"
        "print('napari' in sys.modules or 'qtpy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


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
