"""napari sample data: synthetic images with ground truth, and a small sample project."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
SAMPLE_PROJECT_SEED = 7


def sample_project_path() -> Path:
    """The bundled sample project; regenerated (seeded) into a cache folder if absent."""
    bundled = RESOURCES / "sample_project"
    if (bundled / "images").is_dir():
        return bundled
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "napari-hybridseg"
    target = cache / "sample_project"
    if not (target / "images").is_dir():
        build_sample_project(target)
    return target


def demo_project_path() -> Path:
    """A writable copy of the sample project for the demo (the bundled one stays pristine)."""
    import shutil

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "napari-hybridseg"
    target = cache / "demo_project"
    if not (target / "images").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copytree(sample_project_path(), target, ignore=shutil.ignore_patterns("runs"))
    return target


def build_sample_project(root: Path) -> Path:
    """Write the sample project: 8 microscopy-like images, 1 strong, the rest weak."""
    from .synthetic import make_project

    make_project(
        root,
        n_images=8,
        strong_fraction=0.125,
        weak="both",
        corrupt_fraction=0.3,
        shape=(160, 160),
        seed=SAMPLE_PROJECT_SEED,
    )
    return root


def microscopy_sample():
    from .synthetic import synth_image

    image, labels = synth_image(np.random.default_rng(0), (256, 256), "microscopy")
    return [(image, {"name": "synthetic nuclei"}, "image"), (labels, {"name": "synthetic nuclei truth"}, "labels")]


def volume_sample():
    from .synthetic import synth_volume

    image, labels = synth_volume(np.random.default_rng(0), (24, 128, 128))
    return [(image, {"name": "synthetic scan"}, "image"), (labels, {"name": "synthetic scan truth"}, "labels")]


def project_sample():
    from ._reader import read_project

    return read_project(str(sample_project_path()))
