"""Orientation letters come from the grid's direction; LPS points map back to the right voxel."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.geometry import Geometry
from pipeline.qc import direction_letters, physical_to_index, screen_letters


def test_axial_lps_image_has_patient_right_on_the_left() -> None:
    letters = screen_letters(np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))
    assert letters == {"left": "R", "right": "L", "top": "A", "bottom": "P"}


def test_flipped_rows_and_columns_flip_the_letters() -> None:
    letters = screen_letters(np.array([-1.0, 0, 0]), np.array([0, -1.0, 0]))
    assert letters == {"left": "L", "right": "R", "top": "P", "bottom": "A"}


def test_coronal_plane_superior_up() -> None:
    assert screen_letters(np.array([1.0, 0, 0]), np.array([0, 0, -1.0]))["top"] == "S"


@pytest.mark.parametrize(
    ("vector", "letters"),
    [((0.9, 0.43, 0.0), "LP"), ((-0.97, 0.1, 0.2), "R"), ((0.0, -0.3, -0.95), "IA")],
)
def test_oblique_directions_name_two_axes(vector: tuple[float, float, float], letters: str) -> None:
    assert direction_letters(np.array(vector)) == letters


def test_physical_to_index_inverts_index_to_physical() -> None:
    q, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(3, 3)))
    geometry = Geometry(
        size_zyx=(10, 20, 30),
        origin_mm=(-12.0, 30.5, -200.0),
        spacing_mm=(0.7, 0.8, 2.5),
        direction=tuple(float(v) for v in q.ravel()),
    )
    index = np.array([[0.0, 0.0, 0.0], [3.0, 7.5, 12.25], [9.0, 19.0, 29.0]])
    assert physical_to_index(geometry, geometry.index_to_physical(index)) == pytest.approx(index)
