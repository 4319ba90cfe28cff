"""Benchmarks: each prints what it measured next to its goal; results are recorded in ``docs/``.

Run them as modules from the repository root, as the Makefile's ``bench-*`` targets do
(``python -m bench.local_run``): ``bench`` is a package, so benchmarks import each other and the
project without touching ``sys.path``. :mod:`bench.harness` gives the machine's description and the
one way to start a benchmark's child process; :mod:`bench._procmem` measures memory. Inputs come from
``pipeline.demo`` (phantoms, cohort rows, the HU-window model); the test stand-ins a benchmark shares
with the tests (the moto S3 server, tiny nnU-Net folders, analytic shapes) from ``tests.support``.
"""
