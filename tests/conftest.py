"""Shared fixtures: the CPU always, CUDA when a GPU usable by torch and ASTRA is present."""

from __future__ import annotations

import pytest
import torch

from medrecon.operators.ct import cuda_available

#: scripts that made the stored test data (run by hand with other packages, not tests)
collect_ignore_glob = ["data/*.py"]

DEVICES = ["cpu"] + (["cuda"] if cuda_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)
