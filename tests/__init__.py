"""Tests, mirroring the source tree; helpers in ``tests.support``."""
