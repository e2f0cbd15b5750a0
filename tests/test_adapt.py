"""Scan-adaptive priors in DDS: a wrong Gaussian prior adapted towards the right
posterior, plain DDS unchanged, the shipped network untouched, divergence caught."""

from __future__ import annotations

import math

import pytest
import torch

from medrecon.operators.base import MatrixOperator
from medrecon.operators.registry import build
from medrecon.priors.gaussian import GaussianPrior
from medrecon.priors.network import EDMDenoiser, TinyDenoiserNet
from medrecon.solvers.adapt import Adaptation, LoRAConv2d, adapted
from medrecon.solvers.dds import dds
from medrecon.solvers.problem import Problem
from medrecon.solvers.schedules import karras
from medrecon.studies import MappedPrior

F64 = torch.float64


def _gaussian_case(shift: float):
    """Eight scans of a 32-pixel image from the right prior, 48 noisy measurements each;
    the wrong prior's mean is off by ``shift`` (its standard deviation is 0.22)."""
    g = torch.Generator().manual_seed(1)
    A = torch.randn(48, 32, generator=g, dtype=F64) / 48**0.5
    mean = 2 * torch.linspace(-1, 1, 32, dtype=F64).sin()
    right, wrong = GaussianPrior(mean, 0.05), GaussianPrior(mean + shift, 0.05)
    y = right.sample(8, g) @ A.T
    problem = Problem(MatrixOperator(A), y + 0.1 * torch.randn(y.shape, generator=g,
                                                               dtype=F64), 0.1)
    exact = torch.stack([right.posterior(problem.operator, yb, 0.1).mean for yb in problem.y])
    return problem, right, wrong, exact


def _error(image, exact) -> float:
    return float(torch.linalg.vector_norm(image - exact) / torch.linalg.vector_norm(exact))


def test_adaptation_corrects_a_wrong_gaussian_prior():
    """A prior whose mean is 4.5 standard deviations off: adapting its mean to the data
    (one shift shared by the batch) brings DDS to the exact posterior mean of the right
    prior about as close as DDS with the right prior (relative errors measured: 0.165
    with the wrong prior, 0.083 adapted, 0.078 with the right prior; 0.16-0.17, 0.083-0.090
    and 0.078-0.084 over four sampler seeds)."""
    problem, right, wrong, exact = _gaussian_case(1.0)
    sigmas = karras(0.01, 10.0, 30)

    def run(prior, adapt=None):
        return dds(problem, prior, sigmas, eta=0.5, adapt=adapt,
                   generator=torch.Generator().manual_seed(3))

    given = wrong.mean.clone()
    plain = _error(run(wrong).image, exact)
    result = run(wrong, Adaptation(steps=3, lr=0.1))
    reference = _error(run(right).image, exact)
    assert _error(result.image, exact) < 0.6 * plain
    assert _error(result.image, exact) < 1.3 * reference
    info = result.info["adaptation"]
    assert info["fell_back"] is False and result.info["warnings"] == []
    assert info["steps"] == 3 * 30 == len(info["losses"]) == result.nfe
    assert info["losses"][-1] < 0.1 * info["losses"][0]
    assert torch.equal(wrong.mean, given)  # the given prior is not modified


def _network(width: int = 8) -> EDMDenoiser:
    torch.manual_seed(0)
    return EDMDenoiser(TinyDenoiserNet(1, width=width), is_complex=False, scale=2.0).eval()


def _ct_problem() -> Problem:
    A = build("ct_parallel_linear", "cpu", torch.float32)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((2, *A.domain_shape), generator=g)
    return Problem(A, A(x), sigma_y=0.05)


@pytest.mark.parametrize("prior", ["gaussian", "network"])
def test_no_adaptation_is_plain_dds(prior):
    if prior == "gaussian":
        problem, _, denoiser, _ = _gaussian_case(1.0)
    else:
        problem, denoiser = _ct_problem(), _network()
    sigmas = karras(0.02, 10.0, 6)
    runs = [dds(problem, denoiser, sigmas, n_samples=2,
                generator=torch.Generator().manual_seed(2), **extra)
            for extra in ({}, {"adapt": None})]
    assert torch.equal(runs[0].image, runs[1].image)
    assert torch.equal(runs[0].samples, runs[1].samples)
    assert runs[1].info["warnings"] == [] and "adaptation" not in runs[1].info
    adapted_run = dds(problem, denoiser, sigmas, n_samples=2, adapt=Adaptation(lr=0.05),
                      generator=torch.Generator().manual_seed(2))
    assert not torch.equal(adapted_run.image, runs[0].image)  # adaptation does act
    assert adapted_run.nfe == runs[0].nfe  # one Adam step per level: no extra evaluation


def test_the_shipped_network_is_not_modified():
    base = _network()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    flags = [p.requires_grad for p in base.parameters()]
    copy, params = adapted(base, 2)
    wrapped = [m for m in copy.modules() if isinstance(m, LoRAConv2d)]
    assert len(wrapped) == 3 and len(params) == 6
    assert all(p.requires_grad for p in params)
    assert not any(p.requires_grad for m in wrapped for p in m.base.parameters())
    x = torch.randn(2, 12, 12)
    with torch.no_grad():  # zero-initialised adapters: the copy starts equal to the base
        assert torch.equal(copy(x, 0.7), base(x, 0.7))
    problem = _ct_problem()
    result = dds(problem, base, karras(0.02, 10.0, 6), adapt=Adaptation(steps=2, lr=0.05),
                 generator=torch.Generator().manual_seed(2))
    info = result.info["adaptation"]
    assert info["steps"] == 12 and not info["fell_back"]
    assert result.nfe == 6 + 6  # the second Adam step of each level evaluates once more
    assert all(math.isfinite(v) for v in info["losses"])
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert [p.requires_grad for p in base.parameters()] == flags
    assert not any(isinstance(m, LoRAConv2d) for m in base.modules())


def test_wrappers_and_own_adapters_are_dispatched():
    mapped = MappedPrior(_network(), 3.0, 0.5)
    copy, params = adapted(mapped, 2)
    assert isinstance(copy, MappedPrior) and (copy.scale, copy.offset) == (3.0, 0.5)
    assert copy.denoiser is not mapped.denoiser and len(params) == 6

    class Own:
        def adapter(self, rank):
            return "adapted", [torch.zeros(rank)]

    assert adapted(Own(), 3)[0] == "adapted"
    with pytest.raises(ValueError, match="network denoiser with convolutions"):
        adapted(lambda x, s: x, 4)


@pytest.mark.parametrize("prior", ["gaussian", "network"])
def test_divergence_falls_back_to_the_base_prior(prior):
    if prior == "gaussian":
        problem, _, denoiser, _ = _gaussian_case(1.0)
    else:
        problem, denoiser = _ct_problem(), _network()
    result = dds(problem, denoiser, karras(0.02, 10.0, 6), adapt=Adaptation(lr=1e6),
                 generator=torch.Generator().manual_seed(2))
    assert result.info["adaptation"]["fell_back"] is True
    (warning,) = result.info["warnings"]
    assert warning.startswith("dds: test-time adaptation diverged at step")
    assert "fell back to the base prior" in warning
    assert bool(torch.isfinite(result.image).all())
    assert float(result.residual.max()) < 1.0


@pytest.mark.parametrize("field, value", [
    ("steps", 0), ("steps", 1.5), ("steps", True), ("rank", 0), ("every", 0),
    ("lr", 0.0), ("lr", -1e-3), ("lr", float("nan")), ("lr", float("inf")), ("lr", "1e-3")])
def test_adaptation_settings_are_validated(field, value):
    with pytest.raises(ValueError, match=f"Adaptation.{field}"):
        Adaptation(**{field: value})
