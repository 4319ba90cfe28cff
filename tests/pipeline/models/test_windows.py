"""The banded sliding-window stitcher gives MONAI's result, bit for bit, and never holds the volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from pipeline.errors import ModelError
from pipeline.models.windows import ArraySink, NpySink, WindowPlan, sliding_window_probabilities


class _Net(torch.nn.Module):
    """Random convolutions whose output at a voxel depends on its neighbours and on where the
    window sits (zero padding at the window's edges), so that misplaced windows show."""

    def __init__(self, channels: int):
        super().__init__()
        torch.manual_seed(7)
        self.body = torch.nn.Sequential(
            torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(4, channels, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x / 500.0)


class _Rows:
    """The collected ``[z, C, y, x]`` rows the stitcher hands over, in order."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []

    def write(self, rows: np.ndarray) -> None:
        self.parts.append(rows.copy())

    def close(self) -> None:
        pass

    @property
    def array(self) -> np.ndarray:
        return np.concatenate(self.parts)


def _monai(
    volume: np.ndarray, net: torch.nn.Module, roi, overlap: float, batch: int, sw_device=None
) -> np.ndarray:  # type: ignore[no-untyped-def]
    """MONAI's blend, its windows on ``sw_device`` (the input's, by default) and the sum on the CPU."""
    with torch.inference_mode():
        out = sliding_window_inference(
            torch.from_numpy(volume)[None, None],
            roi_size=roi,
            sw_batch_size=batch,
            predictor=net,
            overlap=overlap,
            mode="gaussian",
            padding_mode="constant",
            cval=-1024.0,
            sw_device=sw_device,
            device="cpu",
        )
    assert isinstance(out, torch.Tensor)
    return out[0].numpy().transpose(1, 0, 2, 3)  # [z, C, y, x]


def _banded(volume, net, roi, overlap: float, batch: int, calls: list, sw_device=None) -> np.ndarray:  # type: ignore[no-untyped-def]
    def slices(z0: int, z1: int) -> np.ndarray:
        calls.append((z0, z1))
        return volume[z0:z1]

    rows = _Rows()
    with torch.inference_mode():
        sliding_window_probabilities(
            slices,
            volume.shape,
            roi_zyx=roi,
            overlap=overlap,
            forward=net,
            to_probability=lambda logits: logits.numpy().transpose(1, 0, 2, 3),
            sink=rows,  # type: ignore[arg-type]
            sw_batch_size=batch,
            sw_device=sw_device,
        )
    return rows.array


@pytest.mark.parametrize(
    ("shape", "roi", "overlap", "batch", "channels"),
    [
        ((37, 50, 45), (16, 24, 24), 0.5, 1, 1),  # windows overlap on every axis, the last one clamped
        ((40, 33, 70), (16, 32, 32), 0.25, 3, 2),  # batches across a row; two channels
        ((10, 30, 20), (16, 24, 32), 0.5, 2, 1),  # padded in z and x, as MONAI pads
        ((16, 24, 24), (16, 24, 24), 0.5, 1, 1),  # one window, the volume's size
        ((5, 7, 9), (8, 8, 12), 0.0, 1, 3),  # smaller than a window on every axis
        ((29, 20, 20), (8, 16, 16), 0.8, 1, 1),  # dense windows: many rows per slice
    ],
)
def test_equals_monai_bit_for_bit(shape, roi, overlap, batch, channels) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(sum(shape))
    volume = rng.normal(0.0, 400.0, size=shape).astype(np.float32)
    net = _Net(channels).eval()
    calls: list[tuple[int, int]] = []
    ours = _banded(volume, net, roi, overlap, batch, calls)
    theirs = _monai(volume, net, roi, overlap, batch)
    assert ours.shape == theirs.shape == (shape[0], channels, shape[1], shape[2])
    np.testing.assert_array_equal(ours, theirs)


def test_batches_within_a_row_equal_monai_to_float_rounding() -> None:
    """Batches here never span two rows of windows, MONAI's may; a convolution's rounding can
    depend on the batch a window runs in (last bit), nothing else differs."""
    volume = np.random.default_rng(3).normal(0.0, 400.0, size=(29, 20, 20)).astype(np.float32)
    net = _Net(1).eval()
    ours = _banded(volume, net, (8, 16, 16), 0.8, 4, [])
    theirs = _monai(volume, net, (8, 16, 16), 0.8, 4)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(ours, np.flip(theirs, axis=0))  # the comparison can fail


def test_reads_every_input_slice_once_and_hands_slices_over_before_the_last_window() -> None:
    """The input is made a band at a time, each model-grid slice once; finished slices leave before
    the last windows run: the stitcher never holds the volume, in or out."""
    volume = np.random.default_rng(0).normal(0.0, 300.0, size=(64, 20, 20)).astype(np.float32)
    net = _Net(1).eval()
    calls: list[tuple[int, int]] = []
    order: list[str] = []
    roi = (8, 20, 20)

    def forward(x: torch.Tensor) -> torch.Tensor:
        order.append("window")
        return net(x)

    class Rows(_Rows):
        def write(self, rows: np.ndarray) -> None:
            order.append("rows")
            super().write(rows)

    rows = Rows()
    with torch.inference_mode():
        sliding_window_probabilities(
            lambda z0, z1: (calls.append((z0, z1)), volume[z0:z1])[1],
            volume.shape,
            roi_zyx=roi,
            overlap=0.5,
            forward=forward,
            to_probability=lambda logits: logits[0].numpy(),
            sink=rows,  # type: ignore[arg-type]
        )
    assert sum(z1 - z0 for z0, z1 in calls) == 64  # each slice resampled once
    assert max(z1 - z0 for z0, z1 in calls) <= roi[0]
    assert order.index("rows") < len(order) // 4  # the first slices left early
    assert order.count("window") == len(WindowPlan.of(volume.shape, roi, 0.5).windows)
    np.testing.assert_array_equal(rows.array, _monai(volume, net, roi, 0.5, 1)[:, 0])


def test_window_plan_follows_monai() -> None:
    plan = WindowPlan.of((37, 10, 45), (16, 24, 24), 0.5)
    assert plan.padded_zyx == (37, 24, 45) and plan.pad_before == (0, 7, 0)
    assert sorted({w[0] for w in plan.windows}) == [0, 8, 16, 21]  # the last clamped to the end
    assert sorted({w[2] for w in plan.windows}) == [0, 12, 21]
    assert [z for z, _ in plan.rows()] == [0, 8, 16, 21]


def test_npy_sink_writes_a_loadable_file_and_abort_removes_it(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    path = tmp_path / "p.npy"
    sink = NpySink(str(path), data.shape)
    sink.write(data[:1])
    sink.write(data[1:])
    sink.close()
    np.testing.assert_array_equal(np.load(path), data)

    short = NpySink(str(tmp_path / "short.npy"), data.shape)
    short.write(data[:1])
    with pytest.raises(RuntimeError, match="1 of 2 slices"):
        short.close()
    torn = NpySink(str(tmp_path / "torn.npy"), data.shape)
    torn.write(data[:1])
    torn.abort()
    assert not (tmp_path / "torn.npy").exists()
    arrays = ArraySink(data.shape)
    arrays.write(data)
    arrays.close()
    np.testing.assert_array_equal(arrays.array, data)


def test_a_model_that_changes_the_window_size_is_a_model_error() -> None:
    volume = np.zeros((8, 8, 8), dtype=np.float32)
    with pytest.raises(ModelError, match="series s1: the model returned windows of shape"):
        sliding_window_probabilities(
            lambda z0, z1: volume[z0:z1],
            volume.shape,
            roi_zyx=(8, 8, 8),
            overlap=0.5,
            forward=lambda x: x[:, :, ::2],
            to_probability=lambda logits: logits[0].numpy(),
            sink=ArraySink(volume.shape),
            series_uid="s1",
        )


def _run(volume: np.ndarray, forward, roi=(4, 6, 6), uid: str | None = "s1") -> np.ndarray:  # type: ignore[no-untyped-def]
    sink = ArraySink(volume.shape)
    sliding_window_probabilities(
        lambda z0, z1: volume[z0:z1],
        volume.shape,
        roi_zyx=roi,
        overlap=0.5,
        forward=forward,
        to_probability=lambda logits: logits[0].numpy(),
        sink=sink,
        series_uid=uid,
    )
    return sink.array


@pytest.mark.parametrize(
    ("forward", "message"),
    [
        (lambda x: [x, x], "returned a list, not one tensor"),  # a deep-supervision export
        (lambda x: x.numpy(), "returned a ndarray, not one tensor"),
        (lambda x: x[:1], "returned windows of shape"),  # one window for a batch of two
        (lambda x: (x > 0).to(torch.int64), "returned torch.int64 logits, not floating point"),
    ],
)
def test_a_model_output_that_is_not_logits_is_a_model_error_naming_the_series(forward, message) -> None:  # type: ignore[no-untyped-def]
    volume = np.zeros((8, 12, 12), dtype=np.float32)
    sink = ArraySink(volume.shape)
    with pytest.raises(ModelError, match=f"series s1: the model {message}"):
        sliding_window_probabilities(
            lambda z0, z1: volume[z0:z1],
            volume.shape,
            roi_zyx=(4, 6, 6),
            overlap=0.5,
            forward=forward,
            to_probability=lambda logits: logits[0].numpy(),
            sink=sink,
            sw_batch_size=2,
            series_uid="s1",
        )


def test_a_model_whose_channel_count_changes_is_a_model_error() -> None:
    calls = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return x.repeat(1, 2 if len(calls) == 1 else 1, 1, 1, 1)

    with pytest.raises(ModelError, match="1 channels for one batch and 2 for an earlier one"):
        _run(np.zeros((8, 12, 12), dtype=np.float32), forward)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_logits_of_another_float_type_are_weighted_in_that_type_as_monai_does(dtype) -> None:  # type: ignore[no-untyped-def]
    volume = np.random.default_rng(5).normal(0.0, 400.0, size=(11, 9, 10)).astype(np.float32)
    net = _Net(1).eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        return net(x).to(dtype)

    ours = _banded(volume, forward, (4, 6, 6), 0.5, 1, [])
    theirs = _monai(volume, forward, (4, 6, 6), 0.5, 1)
    np.testing.assert_array_equal(ours, theirs)


def test_runs_outside_inference_mode_with_a_module_that_tracks_gradients() -> None:
    volume = np.random.default_rng(6).normal(0.0, 400.0, size=(9, 8, 8)).astype(np.float32)
    net = _Net(1)  # parameters require grad; no inference_mode around the call
    assert _run(volume, net).shape == volume.shape


def test_npy_sink_refuses_rows_of_another_shape_and_keeps_an_earlier_file_on_abort(tmp_path: Path) -> None:
    path = tmp_path / "p.npy"
    np.save(path, np.ones((2, 3, 4), dtype=np.float32))
    sink = NpySink(str(path), (np.int64(2), 3, 4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"rows of shape \(2, 5, 5\)"):
        sink.write(np.zeros((2, 5, 5), dtype=np.float32))
    sink.abort()
    np.testing.assert_array_equal(np.load(path), np.ones((2, 3, 4)))  # untouched until a whole file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npy"]
    whole = NpySink(str(path), (np.int64(2), 3, 4))  # type: ignore[arg-type]
    whole.write(np.zeros((2, 3, 4), dtype=np.float32))
    whole.close()
    np.testing.assert_array_equal(np.load(path), np.zeros((2, 3, 4)))


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 3])
def test_on_a_gpu_equals_monai_on_the_same_gpu(batch: int) -> None:
    """Windows on the GPU, blending on the CPU: MONAI's result with its windows on that GPU
    (``sw_device``) and its blending on the CPU (``device``), to float rounding (cuDNN may pick
    another convolution algorithm for another batch size)."""
    cuda = torch.device("cuda")
    volume = np.random.default_rng(11).normal(0.0, 400.0, size=(37, 50, 45)).astype(np.float32)
    net = _Net(2).eval().to(cuda)
    ours = _banded(volume, net, (16, 24, 24), 0.5, batch, [], sw_device=cuda)
    theirs = _monai(volume, net, (16, 24, 24), 0.5, batch, sw_device=cuda)
    assert ours.shape == theirs.shape == (37, 2, 50, 45)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
