"""Sliding-window inference that holds a band of slices, not the whole volume.

MONAI's ``sliding_window_inference`` stitches into a whole-volume output and a whole-volume count
map, from a whole-volume input: three float32 copies of the model's grid (225 MiB for LNQ's largest
CT at 1.5 mm) beside the CT in the worker that holds the model. Here the windows are the same
(MONAI's padding, scan interval and ``dense_patch_slices``), blended with the same Gaussian
(``compute_importance_map``, in the model's dtype) and summed in the same order, so the blended
logits are MONAI's, bit for bit (within rounding when windows are batched: a batch here never
spans two rows, MONAI's may, and a convolution may round by its batch);
but windows run one z row at a time, the input of a row is made when the row starts (resampled
from the CT, reusing the slices it shares with the row before), and once a row is done the slices
no later window touches are divided by their count, turned into foreground probability and handed
to a sink: an array, or a ``.npy`` file written front to back. The worker then holds the CT, the
sink and a band of ``patch depth`` slices (input, output, count), whatever the series' length.

Array axes are ``[z, y, x]`` throughout (``[N, C, z, y, x]`` for tensors), as everywhere else.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices

from pipeline.errors import ModelError
from pipeline.models.base import check_finite

Slices = Callable[[int, int], np.ndarray]
"""``slices(z0, z1)``: rows ``z0:z1`` of the model-grid input, float32 ``[z, y, x]``."""


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows sit on a (padded) model grid, as MONAI places them."""

    size_zyx: tuple[int, int, int]
    roi_zyx: tuple[int, int, int]
    pad_before: tuple[int, int, int]
    padded_zyx: tuple[int, int, int]
    windows: tuple[tuple[int, int, int], ...]
    """Start ``(z, y, x)`` of every window on the padded grid, in MONAI's order (z slowest)."""

    @classmethod
    def of(cls, size_zyx: tuple[int, int, int], roi_zyx: tuple[int, int, int], overlap: float) -> WindowPlan:
        padded = tuple(max(s, r) for s, r in zip(size_zyx, roi_zyx, strict=True))
        pad_before = tuple(max(r - s, 0) // 2 for s, r in zip(size_zyx, roi_zyx, strict=True))
        # MONAI's _get_scan_interval: a window as wide as the image does not move
        interval = tuple(
            r if r == p else max(int(r * (1 - overlap)), 1) for r, p in zip(roi_zyx, padded, strict=True)
        )
        slices = dense_patch_slices(padded, roi_zyx, interval)
        windows = tuple((int(s[0].start), int(s[1].start), int(s[2].start)) for s in slices)
        return cls(
            size_zyx=size_zyx,
            roi_zyx=roi_zyx,
            pad_before=pad_before,  # type: ignore[arg-type]
            padded_zyx=padded,  # type: ignore[arg-type]
            windows=windows,
        )

    def rows(self) -> Iterator[tuple[int, list[tuple[int, int, int]]]]:
        """``(z start, windows of that start)`` in order; ``dense_patch_slices`` orders z slowest."""
        z_start, row = self.windows[0][0], list[tuple[int, int, int]]()
        for window in self.windows:
            if window[0] != z_start:
                yield z_start, row
                z_start, row = window[0], []
            row.append(window)
        yield z_start, row


class ArraySink:
    """Probabilities kept in memory, ``[z, y, x]`` float32."""

    def __init__(self, shape: tuple[int, int, int]):
        self.array = np.empty(shape, dtype=np.float32)
        self._next = 0

    def write(self, rows: np.ndarray) -> None:
        self.array[self._next : self._next + len(rows)] = rows
        self._next += len(rows)

    def close(self) -> None:
        if self._next != len(self.array):
            raise RuntimeError(f"{self._next} of {len(self.array)} slices were written")

    def abort(self) -> None:
        """Nothing to undo: the array goes with the sink."""

    def result(self) -> np.ndarray:
        return self.array


class NpySink:
    """Probabilities written to a ``.npy`` file front to back (C order is z-major, so finished
    slices append): nothing of the output stays in the writer's memory. The file is written under
    a temporary name and appears at ``path`` whole, on :meth:`close`."""

    def __init__(self, path: str, shape: tuple[int, int, int]):
        self.path, self.shape = path, (int(shape[0]), int(shape[1]), int(shape[2]))
        self._partial = f"{path}.part"
        self._file = open(self._partial, "wb")  # noqa: SIM115  (closed by close(), or abort())
        np.lib.format.write_array_header_1_0(
            self._file, {"descr": np.dtype(np.float32).str, "fortran_order": False, "shape": self.shape}
        )
        self._next = 0

    def write(self, rows: np.ndarray) -> None:
        if rows.ndim != 3 or tuple(rows.shape[1:]) != self.shape[1:]:
            raise ValueError(f"rows of shape {rows.shape} for a volume of {self.shape}")
        np.ascontiguousarray(rows, dtype=np.float32).tofile(self._file)  # no bytes copy
        self._next += len(rows)

    def close(self) -> None:
        self._file.close()
        if self._next != self.shape[0]:
            raise RuntimeError(f"{self.path}: {self._next} of {self.shape[0]} slices were written")
        os.replace(self._partial, self.path)

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._partial)

    def result(self) -> np.ndarray:
        """The written file, mapped read-only (after :meth:`close`)."""
        return np.load(self.path, mmap_mode="r")


Sink = ArraySink | NpySink


@torch.inference_mode()
def sliding_window_probabilities(
    slices: Slices,
    size_zyx: tuple[int, int, int],
    *,
    roi_zyx: tuple[int, int, int],
    overlap: float,
    forward: Callable[[torch.Tensor], torch.Tensor],
    to_probability: Callable[[torch.Tensor], np.ndarray],
    sink: Sink,
    cval: float = -1024.0,
    sw_batch_size: int = 1,
    sw_device: torch.device | None = None,
    series_uid: str | None = None,
) -> None:
    """Blend ``forward`` over Gaussian-weighted windows of the input that ``slices`` gives, and
    write ``to_probability(logits [C, z, y, x])`` of each finished band of slices to ``sink``.

    ``forward`` takes a ``[N, 1, *roi]`` float32 batch on ``sw_device`` and returns ``[N, C, *roi]``
    logits (the caller puts any lock around it). Padding (``cval``) is MONAI's: a grid smaller than
    a window along an axis is padded to the window, half before and half after."""
    plan = WindowPlan.of(size_zyx, roi_zyx, overlap)
    device = sw_device or torch.device("cpu")
    weight = compute_importance_map(roi_zyx, mode="gaussian", sigma_scale=0.125, device=device)
    weight_cpu = weight.cpu()
    rz, ry, rx = roi_zyx
    pz, py, px = plan.pad_before
    _, pad_y, pad_x = plan.padded_zyx
    depth = size_zyx[0]
    band_in = _InputBand(slices, plan, cval, series_uid)
    out: torch.Tensor | None = None  # [C, rz, Y, X], padded y/x
    count = torch.zeros((rz, pad_y, pad_x), dtype=torch.float32)
    band_z = 0  # padded z of the band's first slice
    done = 0  # padded slices handed to the sink

    def finish(upto: int) -> None:
        """Divide, convert and hand over padded slices ``done:upto`` (the band's first ones)."""
        nonlocal done
        assert out is not None
        if upto <= done:
            return
        z_lo, z_hi = max(done, pz), min(upto, pz + depth)  # the unpadded part
        if z_hi > z_lo:
            lo, hi = z_lo - band_z, z_hi - band_z
            blended = out[:, lo:hi, py : py + size_zyx[1], px : px + size_zyx[2]]
            blended /= count[lo:hi, py : py + size_zyx[1], px : px + size_zyx[2]]  # in place: done with
            probability = to_probability(blended)
            check_finite(
                probability,
                what="foreground probabilities",
                series_uid=series_uid,
                where="in a band of slices",
            )
            sink.write(probability)
        done = upto

    for z_start, row in plan.rows():
        if out is not None:
            finish(z_start)  # no window of this row or later reaches below z_start
            _shift_band(out.numpy(), z_start - band_z, axis=1)
            _shift_band(count.numpy(), z_start - band_z, axis=0)
        band_z = z_start
        band = band_in.rows(z_start, z_start + rz)  # [rz, Y, X] padded
        for i in range(0, len(row), sw_batch_size):
            batch = row[i : i + sw_batch_size]
            x = torch.stack([band[:, y : y + ry, x0 : x0 + rx] for _, y, x0 in batch])[:, None].to(device)
            logits = _checked(forward(x), x, channels=None if out is None else out.shape[0], uid=series_uid)
            weighted = logits.mul_(weight).cpu()  # in the model's dtype, in place, as MONAI weights
            if out is None:
                out = torch.zeros((logits.shape[1], rz, pad_y, pad_x), dtype=torch.float32)
            for w, (_, y, x0) in zip(weighted, batch, strict=True):
                out[:, :, y : y + ry, x0 : x0 + rx] += w
                count[:, y : y + ry, x0 : x0 + rx] += weight_cpu
    finish(band_z + rz)


def _checked(logits: object, x: torch.Tensor, *, channels: int | None, uid: str | None) -> torch.Tensor:
    """The model's output for the batch ``x``, or a :class:`ModelError` saying what is wrong with it."""
    if not isinstance(logits, torch.Tensor):
        raise ModelError(
            f"the model returned a {type(logits).__name__}, not one tensor of logits [N, C, z, y, x] "
            "(a deep-supervision export returns a list: export the full-resolution head only)",
            series_uid=uid,
        )
    shape = tuple(logits.shape)
    if len(shape) != 5 or shape[0] != x.shape[0] or shape[2:] != tuple(x.shape[2:]):
        raise ModelError(
            f"the model returned windows of shape {shape} for a batch of {tuple(x.shape)}; "
            "it must keep the window's size [N, C, z, y, x]",
            series_uid=uid,
        )
    if not logits.is_floating_point():
        raise ModelError(f"the model returned {logits.dtype} logits, not floating point", series_uid=uid)
    if channels is not None and shape[1] != channels:
        raise ModelError(
            f"the model returned {shape[1]} channels for one batch and {channels} for an earlier one",
            series_uid=uid,
        )
    check_finite(logits, what="logits", series_uid=uid, where="in a batch of windows")
    return logits


def _shift_band(band: np.ndarray, shift: int, *, axis: int) -> None:
    """Move ``band``'s slices ``shift:`` to the front along ``axis`` and zero the rest, in place
    (a band's worth of memory less than a new tensor)."""
    slices = np.moveaxis(band, axis, 0)  # a view: writes reach ``band``
    n = len(slices)
    for z in range(n - shift):  # front to back: each source slice is read before it is overwritten
        slices[z] = slices[z + shift]
    slices[max(0, n - shift) :] = 0


class _InputBand:
    """The padded input rows of the current window row, reusing those the last row shared."""

    def __init__(self, slices: Slices, plan: WindowPlan, cval: float, series_uid: str | None):
        self._slices, self._plan, self._cval, self._uid = slices, plan, cval, series_uid
        self._z0, self._band = 0, torch.empty(0)

    def rows(self, z0: int, z1: int) -> torch.Tensor:
        if self._band.numel() and self._z0 <= z0 < self._z0 + len(self._band):
            kept = self._band[z0 - self._z0 :]
            fresh = self._padded(self._z0 + len(self._band), z1)
            band = torch.cat([kept, fresh]) if len(fresh) else kept
        else:
            band = self._padded(z0, z1)
        self._z0, self._band = z0, band
        return band

    def _padded(self, z0: int, z1: int) -> torch.Tensor:
        """Padded rows ``z0:z1``: the source's rows where they exist, ``cval`` around them."""
        plan = self._plan
        pz, py, px = plan.pad_before
        depth, rows, cols = plan.size_zyx
        _, pad_y, pad_x = plan.padded_zyx
        band = torch.full((max(0, z1 - z0), pad_y, pad_x), self._cval, dtype=torch.float32)
        lo, hi = max(z0, pz), min(z1, pz + depth)
        if hi > lo:
            source = np.asarray(self._slices(lo - pz, hi - pz))
            if source.shape != (hi - lo, rows, cols):
                raise ModelError(
                    f"the input rows have shape {source.shape}, not {(hi - lo, rows, cols)}",
                    series_uid=self._uid,
                )
            band[lo - z0 : hi - z0, py : py + rows, px : px + cols] = torch.from_numpy(
                np.asarray(source, dtype=np.float32)
            )
        return band
