"""LNQ lymph node pipeline: pure library (no Beam, no cloud clients)."""

__version__ = "0.1.0"
