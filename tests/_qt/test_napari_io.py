"""Reader, writer and sample data through a real napari viewer."""

import nibabel as nib
import numpy as np
import pytest

from napari_hybridseg.annotations import Project
from napari_hybridseg.bridge import annotations_from_layers, role_of
from napari_hybridseg.images import ImageMeta, read_image, write_image

pytestmark = pytest.mark.gui


def test_open_nifti_gz_with_scale_and_affine(make_napari_viewer, tmp_path):
    vol = np.random.default_rng(0).random((4, 10, 12)).astype(np.float32)
    affine = np.diag([0.5, 0.75, 2.5, 1.0])
    write_image(tmp_path / "scan.nii.gz", vol, ImageMeta(affine=affine, format="nii.gz"))
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "scan.nii.gz"), plugin="napari-hybridseg")
    assert layer.data.shape == (4, 10, 12)
    np.testing.assert_allclose(layer.scale, (2.5, 0.75, 0.5))
    np.testing.assert_allclose(layer.metadata["hybridseg"]["affine"], affine)


def test_a_nifti_volume_three_voxels_wide_opens_as_a_volume_not_colour(make_napari_viewer, tmp_path):
    vol = np.random.default_rng(0).random((40, 48, 3)).astype(np.float32)
    write_image(tmp_path / "slab.nii.gz", vol, ImageMeta(format="nii.gz"))
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "slab.nii.gz"), plugin="napari-hybridseg")
    assert not layer.rgb and layer.ndim == 3 and layer.data.shape == (40, 48, 3)


def test_nifti_labels_round_trip_through_save_layers(make_napari_viewer, tmp_path):
    mask = np.zeros((3, 8, 9), np.uint8)
    mask[1, 2:5, 3:7] = 2
    affine = np.array([[0, 0, 1.2, 5], [0, 0.6, 0, 6], [-0.6, 0, 0, 7], [0, 0, 0, 1]], float)
    write_image(tmp_path / "m.nii.gz", mask, ImageMeta(affine=affine, format="nii.gz"))
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "m.nii.gz"), plugin="napari-hybridseg")
    assert layer._type_string == "labels"
    layer.data[0, 0, 0] = 1
    out = tmp_path / "out.nii.gz"
    written = viewer.layers.save(str(out), selected=False, plugin="napari-hybridseg")
    assert written == [str(out)]
    img = nib.load(out)
    assert np.allclose(img.affine, affine)
    back, _ = read_image(out)
    assert back[0, 0, 0] == 1 and back[1, 3, 4] == 2


def test_labels_to_tif_through_writer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    data = np.zeros((20, 30), np.uint16)
    data[5:10, 5:10] = 3
    viewer.add_labels(data, name="cells", scale=(0.5, 0.25))
    out = tmp_path / "cells.tif"
    viewer.layers.save(str(out), selected=False, plugin="napari-hybridseg")
    back, meta = read_image(out)
    np.testing.assert_array_equal(back, data)
    assert meta.spacing == pytest.approx((0.5, 0.25))


def test_open_project_folder_gives_role_tagged_layers(make_napari_viewer, tiny_project):
    viewer = make_napari_viewer()
    viewer.open(str(tiny_project), plugin="napari-hybridseg")
    project = Project.load(tiny_project)
    roles = {}
    for layer in viewer.layers:
        role, image = role_of(layer)
        roles.setdefault(image, {})[role] = layer
    assert set(roles) == set(project.images)
    for item in project:
        layers = roles[item.name]
        assert layers["image"].name == item.name
        if item.role == "strong":
            assert layers["strong"].name == f"{item.name} masks"
            assert layers["strong"]._type_string == "labels"
        if item.boxes:
            shapes = layers["boxes"]
            assert shapes._type_string == "shapes" and shapes.name == f"{item.name} boxes"
            assert len(shapes.data) == len(item.boxes)
        if item.scribbles is not None:
            assert layers["scribbles"].name == f"{item.name} scribbles"
        # an empty prediction layer comes with each 2D image, so training adds none
        assert layers["prediction"].name == f"{item.name} prediction" and not layers["prediction"].data.any()
        # the bridge turns the layers back into the same annotations
        again = annotations_from_layers(layers["image"], list(viewer.layers))
        assert again.boxes == item.boxes and again.role == item.role
    first = next(iter(project.images))
    assert roles[first]["image"].visible and not any(
        layer.visible for name, d in roles.items() if name != first for layer in d.values()
    )


def test_sample_data_opens(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-hybridseg", "nuclei")
    viewer.open_sample("napari-hybridseg", "scan3d")
    viewer.open_sample("napari-hybridseg", "project")
    kinds = {layer._type_string for layer in viewer.layers}
    assert {"image", "labels", "shapes"} <= kinds
    assert any(layer.ndim == 3 for layer in viewer.layers)


def test_a_two_channel_image_is_shown_channels_first_in_line_with_its_masks(make_napari_viewer, tmp_path):
    """napari shows 3 or 4 channels as colour, any other number as an axis, and lines up
    layers by their last axes: a (Y, X, 2) image is shown (2, Y, X), so its masks (Y, X)
    cover it pixel for pixel, and read back channels last for training."""
    from napari_hybridseg._qt.layers import collect_project, visible_slice
    from napari_hybridseg.annotations import ImageAnnotations

    rng = np.random.default_rng(0)
    image = rng.random((40, 56, 2)).astype(np.float32)
    masks = np.zeros((40, 56), np.uint8)
    masks[5:15, 10:30] = 1
    Project([ImageAnnotations("stains", image, strong=masks)]).save(tmp_path / "p")
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "p"), plugin="napari-hybridseg")
    layers = {role_of(layer)[0]: layer for layer in viewer.layers}
    shown, labels = layers["image"], layers["strong"]
    assert not shown.rgb and shown.data.shape == (2, 40, 56) and labels.data.shape == (40, 56)
    np.testing.assert_allclose(shown.extent.world[:, -2:], labels.extent.world)
    assert visible_slice(viewer, shown) is None  # the slider picks a channel, not a slice
    (item,) = collect_project(viewer)
    assert item.axes == "yxc"
    np.testing.assert_array_equal(item.image, image)
    np.testing.assert_array_equal(item.strong, masks)


def test_masks_and_predictions_drawn_over_a_scan_are_saved_in_its_orientation(make_napari_viewer, tmp_path):
    """Layers made over a scan (created, assigned, or predicted) carry its affine, so a mask
    saved as NIfTI lies on the scan in any viewer, flips and origin included."""
    from napari_hybridseg._qt import layers as L
    from napari_hybridseg._qt.prediction_layers import show_prediction

    affine = np.array([[-0.8, 0, 0, 100], [0, -0.8, 0, -50], [0, 0, 3, 20], [0, 0, 0, 1]], float)
    write_image(tmp_path / "scan.nii.gz", np.zeros((6, 16, 20), np.float32), ImageMeta(affine=affine, format="nii.gz"))
    viewer = make_napari_viewer()
    (scan,) = viewer.open(str(tmp_path / "scan.nii.gz"), plugin="napari-hybridseg")
    masks = L.ensure_annotation_layers(viewer, scan)["strong"]
    painted = viewer.add_labels(np.zeros((6, 16, 20), np.uint16), name="painted", scale=scan.scale)
    assert L.assign_role(viewer, scan, painted, "scribbles") is None
    show_prediction(viewer, "scan", None, np.full((6, 16, 20), 0.9, np.float32), None, all_layers=True)
    for layer in (masks, painted, viewer.layers["scan prediction"]):
        out = tmp_path / f"{layer.name}.nii.gz"
        viewer.layers.selection = {layer}
        viewer.layers.save(str(out), selected=True, plugin="napari-hybridseg")
        np.testing.assert_allclose(nib.load(out).affine, affine, err_msg=layer.name)


def test_an_empty_labels_layer_assigned_as_masks_of_a_volume_masks_only_the_slices_painted(make_napari_viewer):
    from napari_hybridseg._qt import layers as L

    viewer = make_napari_viewer()
    volume = viewer.add_image(np.zeros((6, 16, 16), np.float32), name="vol")
    mine = viewer.add_labels(np.zeros((6, 16, 16), np.uint16), name="mine")
    assert L.assign_role(viewer, volume, mine, "masks") is None
    mine.paint((2, 8, 8), 1)
    assert L.collect_project(viewer)["vol"].strong_slices == [2]
