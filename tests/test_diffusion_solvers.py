"""Every diffusion solver on a CT and an MRI operator from the registry, with a small
network prior, batch size 2: finite results and the documented network evaluations."""

from __future__ import annotations

import pytest
import torch

from medrecon.errors import NumericalError, OperatorShapeError
from medrecon.operators.registry import build
from medrecon.priors.network import EDMDenoiser, TinyDenoiserNet
from medrecon.solvers import SOLVERS, solve
from medrecon.solvers.problem import Problem
from medrecon.solvers.schedules import karras

STEPS = 6
OPERATORS = {"ct_parallel_linear": torch.float32, "mri_sense_columns": torch.complex64,
             "mri_nufft_multicoil": torch.complex64}
# solver -> (extra parameters, expected network evaluations for 2 samples... per chain)
RUNS = {
    "dps": ({"zeta": 0.3, "n_samples": 2}, 2 * STEPS),
    "dds": ({"cg_iter": 3, "n_samples": 2}, 2 * STEPS),
    "rmpvi": ({"inner_iter": 2}, (STEPS - 1) * 2),
}


def _prior(is_complex: bool, scale: float = 1.0) -> EDMDenoiser:
    torch.manual_seed(0)
    return EDMDenoiser(TinyDenoiserNet(2 if is_complex else 1, width=8),
                       is_complex=is_complex, scale=scale).eval()


def _problem(name: str, dtype: torch.dtype) -> Problem:
    A = build(name, "cpu", dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((2, *A.domain_shape), dtype=dtype, generator=g)
    return Problem(A, A(x), sigma_y=0.05)


@pytest.mark.parametrize("method", sorted(RUNS))
@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_solver_runs_on_registry_operator(method, name):
    dtype = OPERATORS[name]
    problem = _problem(name, dtype)
    params, nfe = RUNS[method]
    result = solve(method, problem, denoiser=_prior(dtype.is_complex, scale=2.0),
                   sigmas=karras(0.02, 10.0, STEPS), generator=torch.Generator().manual_seed(2),
                   **params)
    assert result.image.shape == (2, *problem.operator.domain_shape)
    assert result.image.dtype == dtype and bool(torch.isfinite(result.image).all())
    assert result.nfe == nfe and result.residual.shape == (2,)
    assert result.timings["total"] > 0
    if method != "rmpvi":
        assert result.samples.shape == (2, 2, *problem.operator.domain_shape)
        assert bool((result.std >= 0).all())


def test_solvers_are_in_the_table():
    assert {"dps", "dds", "rmpvi"} <= set(SOLVERS)


def test_prior_layout_must_fit_the_operator():
    problem = _problem("mri_sense_columns", torch.complex64)
    with pytest.raises(OperatorShapeError, match="real"):
        solve("dds", problem, denoiser=_prior(False), sigmas=karras(0.02, 10.0, 3))


def test_measurement_shape_must_fit():
    A = build("ct_parallel_linear", "cpu", torch.float32)
    with pytest.raises(OperatorShapeError, match="does not fit"):
        Problem(A, torch.zeros(3, 4))


class _NaNNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, noise):
        return x * float("nan")


@pytest.mark.parametrize("method", sorted(RUNS))
def test_nan_from_the_network_stops_with_the_step(method):
    problem = _problem("ct_parallel_linear", torch.float32)
    prior = EDMDenoiser(_NaNNet(), is_complex=False)
    with pytest.raises(NumericalError, match="step 0"):
        solve(method, problem, denoiser=prior, sigmas=karras(0.02, 10.0, 3))
