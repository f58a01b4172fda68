"""Fixtures of the learning tests: tiny synthetic samples, one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest

from ppp_dist.data import write_synthetic_volume


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    """Every learning test runs with one torch thread (tests/conftest.py says why)."""


@pytest.fixture(scope="session")
def nuclei_sample(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("samples") / "nuclei.zarr"
    write_synthetic_volume(path, "nuclei2d", (64, 64), (32, 32), seed=3, n=6, radius=(5.0, 8.0))
    return path


@pytest.fixture(scope="session")
def tubes_sample(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("samples") / "tubes.zarr"
    write_synthetic_volume(path, "tubes", (24, 28, 26), (12, 14, 13), seed=1, n_tubes=3)
    return path
