"""The LNQ-like phantom generator, for tests.

It lives in product code (``pipeline/demo/phantoms.py``), where ``lnq demo`` uses it; tests keep
importing it from here.
"""

from __future__ import annotations

from pipeline.demo.phantoms import (
    UID_ROOT,
    Ellipsoid,
    Phantom,
    ct_datasets,
    default_nodes,
    generate_uid,
    make_phantom,
    uid,
    write_reference_seg,
    write_seg,
)

__all__ = [
    "UID_ROOT",
    "Ellipsoid",
    "Phantom",
    "ct_datasets",
    "default_nodes",
    "generate_uid",
    "make_phantom",
    "uid",
    "write_reference_seg",
    "write_seg",
]
