"""TIFF and NIfTI round trips, axis order, metadata."""

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_hybridseg.annotations import ImageAnnotations
from napari_hybridseg.errors import ImageReadError
from napari_hybridseg.images import ImageMeta, read_image, spatial_axes, strip_suffix, write_image


def test_nifti_axis_order_is_reversed_on_read(tmp_path):
    # on disk (x, y, z) = (5, 4, 3); in memory napari order (z, y, x)
    data = np.arange(5 * 4 * 3, dtype=np.int16).reshape(5, 4, 3)
    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    affine[:3, 3] = [10, -20, 5]
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "a.nii.gz")
    arr, meta = read_image(tmp_path / "a.nii.gz")
    assert arr.shape == (3, 4, 5)
    assert arr[2, 1, 4] == data[4, 1, 2]
    assert meta.spacing == pytest.approx((2.0, 0.7, 0.5))
    assert np.allclose(meta.affine, affine)
    assert meta.napari_scale(3) == pytest.approx((2.0, 0.7, 0.5))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip_keeps_data_and_affine(tmp_path, suffix):
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 5, (6, 7, 8)).astype(np.uint8)
    affine = np.array([[0, 0, 1.5, 3], [0, 0.8, 0, 1], [-0.8, 0, 0, 2], [0, 0, 0, 1]], float)
    meta = ImageMeta(spacing=(1.5, 0.8, 0.8), affine=affine, format=suffix[1:])
    path = write_image(tmp_path / f"m{suffix}", vol, meta)
    back, meta2 = read_image(path)
    np.testing.assert_array_equal(back, vol)
    assert np.allclose(meta2.affine, affine)
    # and what another NIfTI reader sees is in (x, y, z) order
    assert nib.load(path).shape == (8, 7, 6)


def test_nifti_2d_and_singleton_slice(tmp_path):
    img = np.arange(12, dtype=np.float32).reshape(3, 4)  # (y, x)
    write_image(tmp_path / "b.nii.gz", img, ImageMeta(spacing=(0.5, 0.25)))
    assert nib.load(tmp_path / "b.nii.gz").shape == (4, 3)
    back, meta = read_image(tmp_path / "b.nii.gz")
    np.testing.assert_array_equal(back, img)
    assert meta.spacing == pytest.approx((0.5, 0.25))
    nib.save(nib.Nifti1Image(img.T[:, :, None], np.eye(4)), tmp_path / "c.nii")
    back, _ = read_image(tmp_path / "c.nii")
    np.testing.assert_array_equal(back, img)


def test_tiff_round_trip_keeps_pixel_size(tmp_path):
    img = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30)
    write_image(tmp_path / "a.tif", img, ImageMeta(spacing=(0.25, 0.5)))
    back, meta = read_image(tmp_path / "a.tif")
    np.testing.assert_array_equal(back, img)
    assert meta.spacing == pytest.approx((0.25, 0.5))


def test_tiff_pixel_size_from_resolution_tags(tmp_path):
    img = np.zeros((8, 8), np.uint8)
    tifffile.imwrite(tmp_path / "r.tif", img, resolution=(1 / 0.2, 1 / 0.4))  # x, y pixels per unit
    _, meta = read_image(tmp_path / "r.tif")
    assert meta.spacing == pytest.approx((0.4, 0.2))


def test_truncated_and_unknown_files_get_clear_errors(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "t.tif", img)
    raw = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ImageReadError, match="t.tif"):
        read_image(tmp_path / "t.tif")
    (tmp_path / "x.jpg").write_bytes(b"123")
    with pytest.raises(ImageReadError, match="unsupported file type .jpg"):
        read_image(tmp_path / "x.jpg")
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "missing.tif")
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(ImageReadError, match="bad.nii.gz"):
        read_image(tmp_path / "bad.nii.gz")


def test_write_is_atomic_on_failure(tmp_path):
    path = tmp_path / "keep.tif"
    write_image(path, np.ones((4, 4), np.uint8))
    with pytest.raises((TypeError, KeyError, ValueError)):  # tifffile refuses object arrays
        write_image(path, np.array([[object()]]))
    back, _ = read_image(path)
    assert back.sum() == 16
    assert [p.name for p in tmp_path.iterdir()] == ["keep.tif"]


def test_spatial_axes_and_names():
    assert spatial_axes(np.zeros((10, 12))) == "yx"
    assert spatial_axes(np.zeros((10, 12, 3))) == "yxc"
    assert spatial_axes(np.zeros((5, 12, 12))) == "zyx"
    assert strip_suffix("a/b/scan.nii.gz") == "scan"
    assert strip_suffix("cell.TIF") == "cell"


@pytest.mark.parametrize("suffix", [".tif", ".png", ".nii.gz", ".nii"])
def test_an_unreadable_file_is_named_without_printing_its_content(tmp_path, suffix):
    path = tmp_path / f"notes{suffix}"
    path.write_bytes(b"password=hunter2 and other private notes " * 10)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "hunter2" not in message and "pass" not in message


@pytest.mark.parametrize("suffix", [".tif", ".png", ".nii.gz"])
def test_images_larger_than_the_limit_are_refused_before_reading(tmp_path, monkeypatch, suffix):
    from napari_hybridseg.limits import ENV

    path = tmp_path / f"big{suffix}"
    write_image(path, np.zeros((64, 80), np.uint8)) if suffix != ".png" else _png(path, np.zeros((64, 80), np.uint8))
    monkeypatch.setenv(ENV, "5000")
    with pytest.raises(ImageReadError, match=r"big.*declares (64 x 80|80 x 64)( x 1)? = 5,120 values.*--max-voxels"):
        read_image(path)
    monkeypatch.setenv(ENV, "6000")
    assert read_image(path)[0].shape == (64, 80)


def _png(path, arr):
    from PIL import Image

    Image.fromarray(arr).save(path)


def test_nifti_with_a_trailing_axis_of_one_is_a_volume(tmp_path):
    data = np.random.default_rng(0).random((10, 12, 5, 1)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 0.5, 2.0, 1.0])), tmp_path / "v.nii.gz")
    arr, meta = read_image(tmp_path / "v.nii.gz")
    assert arr.shape == (5, 12, 10) and meta.spacing == (2.0, 0.5, 0.5)


def test_a_singular_affine_is_replaced_with_a_warning_not_a_failure(tmp_path):
    img = nib.Nifti1Image(np.ones((6, 7, 3), np.float32), np.eye(4))
    img.header.set_sform(np.zeros((4, 4)), code=1)  # as some converters write it
    img.header.set_qform(None, code=0)
    nib.save(nib.Nifti1Image(np.ones((6, 7, 3), np.float32), None, img.header), tmp_path / "z.nii.gz")
    arr, meta = read_image(tmp_path / "z.nii.gz")
    with pytest.warns(UserWarning, match="affine is not invertible"):
        write_image(tmp_path / "mask.nii.gz", (arr > 0).astype(np.uint8), meta)
    back, _ = read_image(tmp_path / "mask.nii.gz")
    np.testing.assert_array_equal(back, arr > 0)


def test_a_tiff_with_a_trailing_axis_of_one_is_a_2d_image(tmp_path):
    """``(Y, X, 1)`` is one grey channel, not Y slices of X x 1 pixels."""
    tifffile.imwrite(tmp_path / "a.tif", np.arange(64 * 48, dtype=np.uint16).reshape(64, 48, 1))
    data, _ = read_image(tmp_path / "a.tif")
    assert data.shape == (64, 48) and spatial_axes(data) == "yx"
    assert data[1, 0] == 48


def test_imagej_channels_are_the_last_axis(tmp_path):
    """A TIFF that declares its first axis as channels (ImageJ's ``CYX``) is a 2D image with
    channels, whatever their number, not a volume."""
    arr = np.random.default_rng(0).integers(0, 255, (3, 64, 48), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "c.tif", arr, imagej=True, metadata={"axes": "CYX"})
    data, _ = read_image(tmp_path / "c.tif")
    assert data.shape == (64, 48, 3) and spatial_axes(data) == "yxc"
    np.testing.assert_array_equal(data[..., 1], arr[1])
    tifffile.imwrite(tmp_path / "z.tif", arr, imagej=True, metadata={"axes": "ZYX"})
    assert read_image(tmp_path / "z.tif")[0].shape == (3, 64, 48)


def test_a_3d_nifti_is_a_volume_however_few_its_voxels_along_x(tmp_path):
    """NIfTI keeps channels in its fifth dimension: three voxels along i are three columns."""
    nib.save(nib.Nifti1Image(np.zeros((3, 64, 64), np.int16), np.diag([5.0, 1, 1, 1])), tmp_path / "s.nii.gz")
    data, meta = read_image(tmp_path / "s.nii.gz")
    assert data.shape == (64, 64, 3) and spatial_axes(data, meta) == "zyx"
    assert ImageAnnotations("s", data, meta).is_volume
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((64, 64, 3), np.uint8))
    assert spatial_axes(*read_image(tmp_path / "rgb.tif")) == "yxc"


def test_a_16_bit_colour_png_is_refused_not_cut_to_8_bits(tmp_path):
    """Pillow reads 16-bit RGB PNGs as 8-bit; a grey 16-bit PNG keeps its values."""
    import zlib

    def png(path, arr, colour_type):
        rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in arr.reshape(arr.shape[0], -1))
        h, w = arr.shape[:2]

        def chunk(kind, body):
            return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

        ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([16, colour_type, 0, 0, 0])
        path.write_bytes(
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
        )

    rgb = np.full((4, 5, 3), 1000, np.uint16)
    png(tmp_path / "rgb16.png", rgb, 2)
    with pytest.raises(ImageReadError, match=r"rgb16\.png.*16-bit"):
        read_image(tmp_path / "rgb16.png")
    grey = np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000
    png(tmp_path / "grey16.png", grey, 0)
    np.testing.assert_array_equal(read_image(tmp_path / "grey16.png")[0], grey)


def test_labels_too_large_for_nifti_are_refused_not_wrapped(tmp_path):
    labels = np.zeros((4, 4), np.int64)
    labels[0, 0] = 3_000_000_000
    with pytest.raises(ValueError, match=r"l\.nii\.gz.*3000000000"):
        write_image(tmp_path / "l.nii.gz", labels)
    assert list(tmp_path.iterdir()) == []
    labels[0, 0] = 2**31 - 1
    write_image(tmp_path / "l.nii.gz", labels)
    assert read_image(tmp_path / "l.nii.gz")[0][0, 0] == 2**31 - 1


def _mapped(array) -> bool:
    while array is not None and not isinstance(array, np.memmap):
        array = array.base
    return array is not None


@pytest.mark.parametrize("trailing", [(), (1,)])
def test_an_uncompressed_nifti_is_read_where_it_is_used_not_copied(tmp_path, trailing):
    """Prediction reads a large scan tile by tile: an uncompressed, unscaled NIfTI stays a
    view of the mapped file in napari order (a scaled one is read, with its scaling)."""
    data = np.arange(6 * 7 * 8, dtype=np.int16).reshape(8, 7, 6)
    nib.save(nib.Nifti1Image(data.reshape(data.shape + trailing), np.eye(4)), tmp_path / "a.nii")
    image, _ = read_image(tmp_path / "a.nii", mmap=True)
    assert _mapped(image) and image.shape == (6, 7, 8)
    np.testing.assert_array_equal(image, data.T)
    scaled = nib.Nifti1Image(data, np.eye(4))
    scaled.header.set_slope_inter(2.0, 1.0)
    nib.save(scaled, tmp_path / "s.nii")
    image, _ = read_image(tmp_path / "s.nii", mmap=True)
    np.testing.assert_allclose(image, data.T * 2.0 + 1.0)
