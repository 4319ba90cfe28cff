"""Nodes are measured on axial slices whatever the source (issue 8, correctness point 1).

highdicom's volume of a SEG puts the slice axis first (SimpleITK size (30, 512, 512), spacing
(8.0, 0.65, 0.65)); scored without the CT, node short axes were taken on sagittal planes and the
count of reference nodes >= 10 mm differed from the count on the CT grid (and from ``lnq run``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.dicom.ct import decode_ct_series
from pipeline.dicom.seg_writer import prediction_seg, seg_bytes
from pipeline.evaluate.case import evaluate_files
from pipeline.evaluate.images import orient_like, read_label_image, read_on_ct, to_axial
from pipeline.geometry import CtVolume, Geometry, mask_to_sitk
from pipeline.measure.categories import is_pathological
from pipeline.measure.nodes import measure_nodes
from tests.support.phantoms import ct_datasets, write_seg

# Centre (offset from the volume centre) and semi-axes, both (x, y, z) mm. Nodes thin along x
# have short axes under 10 mm on axial slices but over 10 mm on sagittal planes.
REAL_CT_NODES = [
    ((-60.0, -40.0, -40.0), (9.0, 8.0, 12.0)),
    ((60.0, -40.0, 0.0), (3.5, 10.0, 14.0)),  # thin along x
    ((0.0, 40.0, 40.0), (12.0, 3.0, 12.0)),
    ((-60.0, 40.0, 0.0), (7.0, 7.0, 6.0)),
    ((60.0, 40.0, -40.0), (2.5, 2.5, 6.0)),
    ((0.0, -60.0, 40.0), (4.0, 8.0, 20.0)),  # thin along x
    ((0.0, 0.0, 0.0), (6.0, 12.0, 5.0)),
    ((-30.0, 70.0, -50.0), (8.0, 6.0, 10.0)),
]


def ellipsoid_mask(geometry: Geometry, nodes: list) -> np.ndarray:  # type: ignore[type-arg]
    z, y, x = np.ogrid[: geometry.size_zyx[0], : geometry.size_zyx[1], : geometry.size_zyx[2]]
    centre = (np.asarray(geometry.size_zyx) - 1) / 2.0
    sx, sy, sz = geometry.spacing_mm
    mask = np.zeros(geometry.size_zyx, bool)
    for (cx, cy, cz), (ax, ay, az) in nodes:
        mask |= (
            (((x - centre[2]) * sx - cx) / ax) ** 2
            + (((y - centre[1]) * sy - cy) / ay) ** 2
            + (((z - centre[0]) * sz - cz) / az) ** 2
        ) <= 1.0
    return mask


def pathological_count(mask: np.ndarray, ct: CtVolume) -> int:
    return sum(is_pathological(n.short_axis_mm) for n in measure_nodes(mask, ct.geometry))


@pytest.fixture()
def real_ct_seg(real_ct: Path, tmp_path: Path) -> tuple[Path, Path, np.ndarray, CtVolume]:
    ct_dir = real_ct / "lpctdx-A0002-8mm-B40f"
    if not ct_dir.is_dir():
        pytest.skip(f"real CT series not present at {ct_dir}")
    ct = decode_ct_series(str(ct_dir))
    mask = ellipsoid_mask(ct.geometry, REAL_CT_NODES)
    path = tmp_path / "seg.dcm"
    path.write_bytes(seg_bytes(prediction_seg(mask, ct, model_name="test", model_version="1")))
    return ct_dir, path, mask, ct


@pytest.mark.filterwarnings("ignore:The string")
def test_real_ct_seg_against_itself_counts_the_same_nodes_with_and_without_ct(real_ct_seg) -> None:
    ct_dir, path, mask, ct = real_ct_seg
    expected = pathological_count(mask, ct)
    assert len(measure_nodes(mask, ct.geometry)) == len(REAL_CT_NODES)
    assert 0 < expected < len(REAL_CT_NODES)
    without_ct = evaluate_files(str(path), str(path))
    with_ct = evaluate_files(str(path), str(path), ct_dir=str(ct_dir))
    assert with_ct["n_reference_nodes_ge_10mm_detected"] == expected
    assert without_ct["n_reference_nodes_ge_10mm_detected"] == expected  # was 6, with 3 expected
    assert without_ct == with_ct


@pytest.mark.filterwarnings("ignore:The string")
def test_real_ct_seg_is_read_in_the_ct_orientation(real_ct_seg) -> None:
    _, path, mask, ct = real_ct_seg
    image = read_label_image(str(path)).image
    grid = Geometry.from_sitk(image)
    present = np.flatnonzero(mask.any(axis=(1, 2)))
    frames = np.arange(present[0], present[-1] + 1)  # the SEG's volume spans its first to last frame
    assert grid.size_zyx == (len(frames), *ct.geometry.size_zyx[1:])
    assert grid.spacing_mm == pytest.approx(ct.geometry.spacing_mm)
    assert grid.direction == pytest.approx(ct.geometry.direction)
    first = ct.geometry.index_to_physical(np.array([[frames[0], 0, 0]]))[0]
    assert grid.origin_mm == pytest.approx(tuple(first), abs=1e-4)
    assert np.array_equal(sitk.GetArrayViewFromImage(image) > 0, mask[frames])


def test_phantom_seg_with_a_thin_node_counts_the_same_with_and_without_ct(phantom, tmp_path: Path) -> None:
    """The same check on a written phantom, which runs where the real CT is absent."""
    ct = decode_ct_series(str(phantom.ct_dir))
    nodes = [((-30.0, -20.0, 0.0), (3.0, 9.0, 12.0)), ((30.0, 20.0, 0.0), (8.0, 7.0, 9.0))]
    mask = ellipsoid_mask(ct.geometry, nodes)
    path = write_seg(ct_datasets(phantom), mask, tmp_path / "seg.dcm")
    expected = pathological_count(mask, ct)
    assert expected == 1
    without_ct = evaluate_files(str(path), str(path))
    with_ct = evaluate_files(str(path), str(path), ct_dir=str(phantom.ct_dir))
    assert without_ct["n_reference_nodes_ge_10mm_detected"] == expected
    assert with_ct == without_ct


def _image(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    return geometry.apply_to(sitk.GetImageFromArray(array))


def _physical_voxels(image: sitk.Image) -> dict[tuple[float, ...], int]:
    """Each voxel's value by its centre in patient space (rounded to 1e-6 mm)."""
    geometry = Geometry.from_sitk(image)
    array = sitk.GetArrayFromImage(image)
    index = np.argwhere(np.ones(array.shape, bool))
    points = np.round(geometry.index_to_physical(index), 6)
    return {tuple(p): int(v) for p, v in zip(points, array.reshape(-1), strict=True)}


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0), (0, 2, 1)])
@pytest.mark.parametrize("flips", [(False, False, False), (True, False, True), (False, True, False)])
def test_to_axial_and_orient_like_permute_without_resampling(order, flips) -> None:
    rng = np.random.default_rng(0)
    axial = Geometry(
        size_zyx=(4, 5, 6),
        origin_mm=(-10.0, 20.0, -300.0),
        spacing_mm=(0.7, 0.8, 2.5),
        direction=tuple(np.eye(3).ravel()),
    )
    array = rng.integers(0, 3, axial.size_zyx).astype(np.uint8)
    reference = _image(array, axial)
    # The same voxels written with axis k of the new image along the reference's axis order[k].
    direction = np.eye(3)[:, list(order)] * np.where(flips, -1.0, 1.0)
    size_xyz = np.asarray(axial.size_zyx[::-1])[list(order)]
    spacing = np.asarray(axial.spacing_mm)[list(order)]
    far = np.asarray(axial.origin_mm) + np.eye(3) @ (
        (np.asarray(axial.size_zyx[::-1]) - 1) * axial.spacing_mm
    )
    origin = np.where(np.eye(3)[:, list(order)] @ np.asarray(flips, float) > 0, far, axial.origin_mm)
    other = sitk.Resample(
        reference,
        Geometry(
            size_zyx=(int(size_xyz[2]), int(size_xyz[1]), int(size_xyz[0])),
            origin_mm=tuple(float(v) for v in origin),
            spacing_mm=tuple(float(v) for v in spacing),
            direction=tuple(float(v) for v in direction.ravel()),
        ).empty_image(),
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
    )
    voxels = _physical_voxels(reference)
    assert _physical_voxels(other) == voxels
    back = orient_like(other, axial)
    assert Geometry.from_sitk(back).same_grid(axial)
    assert np.array_equal(sitk.GetArrayViewFromImage(back), array)
    # to_axial keeps the in-plane senses: the same axial slices, possibly mirrored in plane.
    axial_again = to_axial(other)
    d = Geometry.from_sitk(axial_again).direction_matrix
    assert abs(d[2, 2]) == 1.0 and np.allclose(np.cross(d[:, 0], d[:, 1]), d[:, 2])
    assert abs(d[0, 0]) == 1.0 and abs(d[1, 1]) == 1.0
    assert _physical_voxels(axial_again) == voxels


def test_label_image_of_the_ct_grid_with_other_axis_order_is_accepted_on_the_ct(
    phantom, tmp_path: Path
) -> None:
    """A label image written in another axis order (as highdicom's or a RAS tool's) is placed on the
    CT grid by permuting its axes, not refused."""
    ct = decode_ct_series(str(phantom.ct_dir))
    on_ct = mask_to_sitk(phantom.mask, ct.geometry)
    permuted = sitk.PermuteAxes(on_ct, [2, 1, 0])
    sitk.WriteImage(permuted, str(tmp_path / "permuted.nrrd"))
    placed = read_on_ct(str(tmp_path / "permuted.nrrd"), ct)
    assert Geometry.from_sitk(placed).same_grid(ct.geometry)
    assert np.array_equal(sitk.GetArrayViewFromImage(placed) > 0, phantom.mask)
