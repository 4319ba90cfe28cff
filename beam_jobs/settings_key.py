"""The settings key: the fingerprint of everything that changes a series' results.

Finished series are kept under ``OUTPUT/_lnq/results/<key>/`` and a rerun reuses them only under
the same key. It counts: the code (the pipeline's build version, a digest of its source:
:mod:`pipeline.provenance`); the model, by content (a digest of each of its files: another file of
the same size and time at the same path is another model); nnU-Net folds, checkpoint, step size
and test-time mirroring; with a model, the detection IoU threshold. It does not count: the device
(CPU and GPU give the same masks up to floating-point rounding), workers, limits, endpoints and the
work dir.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipeline.locations import is_remote
from pipeline.process import ProcessConfig

_HASH_BLOCK = 8 << 20
_DIGESTS: dict[tuple[str, int, int, int, int, int], str] = {}
"""sha256 of local model files by (path, device, inode, size, mtime, ctime): a launcher that checks a
model twice hashes it once; any change to the file (even one that restores its mtime) changes its
ctime, so a cached digest is never another content's."""


def run_key(config: ProcessConfig) -> tuple[str, dict[str, Any]]:
    """The key and the settings that went into it."""
    settings: dict[str, Any] = {"pipeline_version": config.pipeline_version, "model": config.model_label}
    spec = config.model
    if spec is not None:
        settings.update(
            folds=list(map(str, spec.folds)),
            checkpoint=spec.checkpoint,
            step_size=spec.step_size,
            tta=spec.tta,
            files=model_fingerprint(spec.artifacts()),
            iou_threshold=config.iou_threshold,  # the reference mode detects nothing: not counted there
        )
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16], settings


def model_fingerprint(artifacts: Iterable[str]) -> list[tuple[str, str]]:
    """(name relative to its artifact, content digest) of every file of the model: sha256 of local
    files, Cloud Storage's CRC32C of remote ones (no download). Paths are relative so that the same
    model copied elsewhere is the same model."""
    files: set[tuple[str, str]] = set()
    for artifact in artifacts:
        base = artifact.rstrip("/")
        if not is_remote(base):
            if os.path.isfile(base):
                files.add((os.path.basename(base), _local_digest(base)))
                continue
            for root, dirs, names in os.walk(base):
                dirs.sort()
                for name in names:
                    path = os.path.join(root, name)
                    files.add((os.path.relpath(path, os.path.dirname(base)), _local_digest(path)))
            continue
        parent = base.rsplit("/", 1)[0]
        for pattern in (base, base + "/**"):
            for meta in FileSystems.match([pattern])[0].metadata_list:
                files.add((meta.path[len(parent) + 1 :], f"crc32c:{FileSystems.checksum(meta.path)}"))
    return sorted(files)


def _local_digest(path: str) -> str:
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    cached = _DIGESTS.get(key)
    if cached is None:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(_HASH_BLOCK):
                digest.update(block)
        cached = _DIGESTS[key] = f"sha256:{digest.hexdigest()}"
    return cached
