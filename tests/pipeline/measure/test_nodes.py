"""Connected components (26-connectivity), volumes and centroids."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.errors import MeasurementError
from pipeline.geometry import Geometry
from pipeline.measure.components import label_nodes
from pipeline.measure.nodes import measure_nodes

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _grid(shape, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=IDENTITY) -> Geometry:
    return Geometry(size_zyx=shape, origin_mm=origin, spacing_mm=spacing, direction=direction)


def test_corner_touching_voxels_are_one_node() -> None:
    mask = np.zeros((4, 4, 4), bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True  # share only a corner
    nodes = measure_nodes(mask, _grid(mask.shape))
    assert [n.voxel_count for n in nodes] == [2]


def test_separate_nodes_numbered_by_size_then_position() -> None:
    mask = np.zeros((6, 8, 8), bool)
    mask[0, 0, 0] = True  # 1 voxel, first in raster order
    mask[4, 6, 6] = True  # 1 voxel, later
    mask[2:4, 2:4, 2:5] = True  # 12 voxels
    nodes = measure_nodes(mask, _grid(mask.shape))
    assert [n.voxel_count for n in nodes] == [12, 1, 1]
    assert [n.node_index for n in nodes] == [1, 2, 3]
    labels = label_nodes(mask, _grid(mask.shape))
    assert labels[0, 0, 0] == 2 and labels[4, 6, 6] == 3


def test_volume_uses_anisotropic_spacing() -> None:
    mask = np.zeros((5, 5, 5), bool)
    mask[1:3, 1:4, 1:5] = True  # 2 x 3 x 4 = 24 voxels
    nodes = measure_nodes(mask, _grid(mask.shape, spacing=(0.5, 0.8, 2.5)))
    assert nodes[0].voxel_count == 24
    assert nodes[0].volume_ml == pytest.approx(24 * 0.5 * 0.8 * 2.5 / 1000)


def test_centroid_in_patient_coordinates_with_direction() -> None:
    # x axis runs to patient right (-x), slices go feet-ward (-z)
    direction = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    geometry = _grid((4, 6, 8), spacing=(0.5, 2.0, 3.0), origin=(10.0, -20.0, 100.0), direction=direction)
    mask = np.zeros((4, 6, 8), bool)
    mask[2, 3, 4:7] = True  # centre at index z=2, y=3, x=5
    (node,) = measure_nodes(mask, geometry)
    assert node.centroid_mm == pytest.approx((10.0 - 5 * 0.5, -20.0 + 3 * 2.0, 100.0 - 2 * 3.0))


def test_sphere_volume_close_to_analytic() -> None:
    spacing = (0.6, 0.6, 1.0)
    shape = (40, 60, 60)
    axes = (np.arange(n) * s for n, s in zip(shape, spacing[::-1], strict=True))
    z, y, x = np.meshgrid(*axes, indexing="ij")
    r = 10.0
    mask = (x - 18) ** 2 + (y - 18) ** 2 + (z - 20) ** 2 <= r**2
    (node,) = measure_nodes(mask, _grid(shape, spacing=spacing))
    assert node.volume_ml == pytest.approx(4 / 3 * math.pi * r**3 / 1000, rel=0.02)
    assert node.centroid_mm == pytest.approx((18.0, 18.0, 20.0), abs=0.01)


def test_empty_mask_has_no_nodes() -> None:
    assert measure_nodes(np.zeros((3, 3, 3), bool), _grid((3, 3, 3))) == []


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(MeasurementError, match="does not match grid"):
        measure_nodes(np.zeros((3, 3, 3), bool), _grid((3, 3, 4)))


def test_every_measure_on_a_phantom_node(phantom) -> None:
    from pipeline.dicom.ct import decode_ct_series

    ct = decode_ct_series(str(phantom.ct_dir))
    nodes = measure_nodes(phantom.mask, ct.geometry, hu=ct.hu)
    big = nodes[0]
    truth = phantom.nodes[0]  # semi-axes 11 x 8 x 9 mm, the largest
    assert big.centroid_mm == pytest.approx(truth.center_mm, abs=0.6)
    pixel = max(phantom.spacing_mm[:2])
    assert big.long_axis_mm == pytest.approx(2 * 11.0, abs=pixel + 0.2)
    assert big.short_axis_mm == pytest.approx(2 * 8.0, abs=pixel + 0.2)
    assert big.recist_category == "target"
    assert big.max_diameter_3d_mm == pytest.approx(22.0, abs=max(phantom.spacing_mm))
    assert abs(big.measurement_slice_z_mm - truth.center_mm[2]) <= phantom.spacing_mm[2]
    assert big.mean_hu == pytest.approx(40.0, abs=2.0)
    assert 4.0 < big.std_hu < 12.0  # the phantom's noise is 8 HU
    cx, cy, cz = truth.center_mm
    a, b, c = truth.semi_axes_mm
    assert big.bbox_min_mm == pytest.approx((cx - a, cy - b, cz - c), abs=max(phantom.spacing_mm))
    assert big.bbox_max_mm == pytest.approx((cx + a, cy + b, cz + c), abs=max(phantom.spacing_mm))
    assert [n.recist_category for n in nodes] == ["target", "non_target", "normal"]
    assert all(n.max_diameter_3d_mm >= n.long_axis_mm for n in nodes)


def test_hu_shape_mismatch_is_refused() -> None:
    with pytest.raises(MeasurementError, match="HU shape"):
        measure_nodes(np.ones((3, 3, 3), bool), _grid((3, 3, 3)), hu=np.zeros((3, 3, 2)))


def test_bad_labels_are_refused_with_a_measurement_error() -> None:
    from pipeline.measure.nodes import measure_labelled

    grid = _grid((3, 3, 3))
    with pytest.raises(MeasurementError, match="integers"):
        measure_labelled(np.ones((3, 3, 3), np.float32), grid)
    with pytest.raises(MeasurementError, match="negative"):
        measure_labelled(-np.ones((3, 3, 3), np.int32), grid)
    with pytest.raises(MeasurementError, match="does not match grid"):
        measure_labelled(np.ones((3, 3, 2), np.uint16), grid)
    assert issubclass(MeasurementError, Exception) and MeasurementError.stage is not None


def test_labels_with_gaps_keep_their_numbers() -> None:
    from pipeline.measure.nodes import measure_labelled

    labels = np.zeros((4, 6, 6), np.uint16)
    labels[1, 1:3, 1:3] = 3
    labels[2, 4, 4] = 1
    nodes = measure_labelled(labels, _grid(labels.shape))
    assert [(n.node_index, n.voxel_count) for n in nodes] == [(1, 1), (3, 4)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_number_components_as_simpleitk_does(seed: int) -> None:
    """scipy's labelling numbers 26-connected components as SimpleITK's ConnectedComponent
    (fully connected) does, so node numbering (ties by raster order) is what it always was."""

    from pipeline.measure.components import label_nodes

    rng = np.random.default_rng(seed)
    mask = rng.random((24, 40, 36)) > 0.9  # hundreds of specks, many of one voxel: ties everywhere
    np.testing.assert_array_equal(label_nodes(mask, _grid(mask.shape)), _simpleitk_numbering(mask))


def _simpleitk_numbering(mask: np.ndarray) -> np.ndarray:
    import SimpleITK as sitk

    itk = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True))
    n = int(itk.max())
    counts = np.bincount(itk.ravel(), minlength=n + 1)[1:]
    remap = np.zeros(n + 1, dtype=np.int64)
    remap[np.argsort(-counts, kind="stable") + 1] = np.arange(1, n + 1)
    return remap[itk]


@pytest.mark.parametrize("seed", [0, 1])
def test_labelling_only_the_foreground_box_numbers_as_the_whole_volume(seed: int, monkeypatch) -> None:
    """label_nodes labels only the box around the foreground, counting and renumbering a few
    slices at a time: specks in an off-centre corner of a larger volume, counted in blocks of
    two slices, are numbered as SimpleITK numbers the whole volume."""
    from pipeline.measure import components
    from pipeline.measure.components import label_nodes

    blocks_of = components._slice_blocks
    seen: list[int] = []

    def small_blocks(volume: np.ndarray) -> list[np.ndarray]:
        blocks = blocks_of(volume, max_voxels=2 * volume.shape[1] * volume.shape[2])
        seen.extend(b.shape[0] for b in blocks)
        return blocks

    monkeypatch.setattr(components, "_slice_blocks", small_blocks)
    rng = np.random.default_rng(seed)
    mask = np.zeros((40, 300, 310), dtype=np.uint8)
    mask[7:31, 101:141, 203:239] = rng.random((24, 40, 36)) > 0.85
    mask[7, 101, 203] = mask[30, 140, 238] = 1
    assert components._foreground_box(mask) == (slice(7, 31), slice(101, 141), slice(203, 239))
    labels = label_nodes(mask, _grid(mask.shape))
    assert labels.dtype == np.uint16 and labels.max() > 100
    np.testing.assert_array_equal(labels, _simpleitk_numbering(mask))
    assert seen[:12] == [2] * 12  # counted (and renumbered) two slices at a time


def test_an_empty_mask_has_no_label() -> None:
    from pipeline.measure.components import label_nodes

    labels = label_nodes(np.zeros((5, 6, 7), np.uint8), _grid((5, 6, 7)))
    assert labels.dtype == np.uint16 and not labels.any()
