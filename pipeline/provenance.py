"""What version of the code computed a result: the release plus a digest of the package's source.

``pipeline.__version__`` names a release and stays the same across commits, so a resume after an
upgrade that changed a measurement would republish the old numbers under it. The build version
adds a digest of every file of this package (source, templates), so any change to the code that
computes results changes the version in the ``series`` table and the runs' settings key.
"""

from __future__ import annotations

import functools
import hashlib
import os

import pipeline

_SKIPPED_DIRS = frozenset({"__pycache__"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


def source_digest(root: str | None = None) -> str:
    """SHA-256 over the relative path and bytes of every file of the package at ``root`` (this
    package by default), in a fixed order: the same tree gives the same digest wherever it is
    installed."""
    root = root or os.path.dirname(os.path.abspath(pipeline.__file__))
    digest = hashlib.sha256()
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        for name in sorted(names):
            if name.endswith(_SKIPPED_SUFFIXES):
                continue
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, root).replace(os.sep, "/")
            with open(path, "rb") as f:
                content = f.read()
            digest.update(f"{relative}\0{len(content)}\0".encode())
            digest.update(content)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def build_version() -> str:
    """``<release>+src.<first 12 hex digits of the source digest>``, e.g. ``0.1.0+src.3f2a9c01b7de``."""
    return f"{pipeline.__version__}+src.{source_digest()[:12]}"
