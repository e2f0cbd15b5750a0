"""The solver contract's diagnostics: ``Reconstruction.residual`` is the true final relative
data residual, and no solver applies the forward operator per iteration for a diagnostic."""

from __future__ import annotations

import pytest
import torch

from medrecon.operators.base import LinearOperator, MatrixOperator
from medrecon.operators.ct import CTProjector
from medrecon.operators.ct_geometry import CTGeometry
from medrecon.operators.mri import CartesianMRI
from medrecon.priors.gaussian import GaussianPrior
from medrecon.solvers.cgsense import cgsense
from medrecon.solvers.classical import cgls, fbp, sirt, tv
from medrecon.solvers.dds import dds
from medrecon.solvers.dps import dps
from medrecon.solvers.l1wavelet import l1wavelet
from medrecon.solvers.problem import Problem
from medrecon.solvers.rmpvi import rmpvi
from medrecon.solvers.schedules import karras
from medrecon.solvers.zero_filled import zero_filled

C128, F64 = torch.complex128, torch.float64
N_ITER, STEPS, INNER, CG_ITER = 20, 6, 3, 4
SOLVERS = {"fbp": fbp, "zf": zero_filled, "cgsense": cgsense, "cgls": cgls, "sirt": sirt,
           "tv": tv, "l1wavelet": l1wavelet, "dps": dps, "dds": dds, "rmpvi": rmpvi}


class Counting(LinearOperator):
    """``op`` counting its forward, adjoint and normal products (a closed-form normal does
    not count as a forward product)."""

    def __init__(self, op: LinearOperator):
        super().__init__(op.domain_shape, op.range_shape, op.dtype, op.device,
                         range_dtype=op.range_dtype, name=f"counting {op.name}")
        self.op, self.forwards, self.adjoints, self.normals = op, 0, 0, 0

    def _forward(self, x):
        self.forwards += 1
        return self.op(x)

    def _adjoint(self, y):
        self.adjoints += 1
        return self.op.adjoint(y)

    def _normal(self, x):
        self.normals += 1
        return self.op.normal(x)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mri(seed: int = 0) -> Problem:
    """Masked 4-coil Cartesian SENSE, 16 x 16, complex128, a batch of two noisy items."""
    g = _gen(seed)
    mask = (torch.rand(16, generator=g) < 0.5).to(F64)
    mask[6:10] = 1.0
    maps = torch.randn(4, 16, 16, generator=g, dtype=C128) / 2
    A = CartesianMRI((16, 16), mask, maps, dtype=C128)
    x = torch.randn(2, 16, 16, generator=g, dtype=C128)
    y = A(x) + 0.05 * torch.randn(2, *A.range_shape, generator=g, dtype=C128)
    return Problem(A, y, sigma_y=0.05)


def _nonnegative(seed: int = 1) -> Problem:
    g = _gen(seed)
    m = torch.rand(40, 15, generator=g, dtype=F64) * (torch.rand(40, 15, generator=g) < 0.3)
    x = torch.rand(2, 15, generator=g, dtype=F64)
    return Problem(MatrixOperator(m), x @ m.T + 0.01 * torch.randn(2, 40, generator=g,
                                                                     dtype=F64))


def _ct() -> Problem:
    A = CTProjector(CTGeometry.parallel((32, 32), n_views=40))
    x = torch.zeros(2, 32, 32)
    x[:, 8:24, 10:20] = 1.0
    return Problem(A, A(x))


def _prior(problem: Problem) -> GaussianPrior:
    return GaussianPrior(torch.zeros(problem.operator.domain_shape, dtype=problem.operator.dtype),
                         1.0)


def _params(method: str, problem: Problem) -> dict:
    """Parameters of a short run; the operator norm given where a solver would otherwise
    run a power iteration (which is not the solver's loop)."""
    sigmas = karras(0.02, 10.0, STEPS)
    norm = 2.0
    return {
        "fbp": {},
        "zf": {},
        "cgsense": {"n_iter": N_ITER, "tol": 0.0, "weight": 0.1},
        "cgls": {"n_iter": N_ITER, "tol": 0.0},
        "sirt": {"n_iter": N_ITER},
        "tv": {"n_iter": N_ITER, "weight": 0.01, "operator_norm": norm},
        "l1wavelet": {"n_iter": N_ITER, "weight": 0.01, "operator_norm": norm,
                      "wavelet": "haar"},
        "dps": {"denoiser": _prior(problem), "sigmas": sigmas, "zeta": 0.3, "n_samples": 2,
                "generator": _gen(3)},
        "dds": {"denoiser": _prior(problem), "sigmas": sigmas, "cg_iter": CG_ITER,
                "n_samples": 2, "generator": _gen(3)},
        "rmpvi": {"denoiser": _prior(problem), "sigmas": sigmas, "inner_iter": INNER,
                  "jacobian": "gaussian", "operator_norm": norm, "generator": _gen(3)},
    }[method]


def _problem(method: str) -> Problem:
    return {"fbp": _ct, "sirt": _nonnegative}.get(method, _mri)()


#: forward products a solver needs for the method itself plus its one final residual
#: (``None``: not checked, e.g. FBP, whose operator is not wrapped)
FORWARDS = {
    "zf": 1,                           # the residual
    "cgsense": 1,                      # the residual (CG runs on the closed-form normal)
    "cgls": 1 + N_ITER + 1,            # r_0, one A p per iteration, the true final residual
    "sirt": 2 + N_ITER,                # A 1, r_0, one per iteration (gives the residual)
    "tv": 1 + N_ITER,                  # A x_0, one per iteration (gives the residual)
    "l1wavelet": 1 + N_ITER,           # A x_0, one per iteration (gives the residual)
    "dps": STEPS,                      # the guidance (it also gives the residual)
    "dds": 1,                          # the residual (CG runs on the closed-form normal)
    "rmpvi": 1,                        # the residual (the CG data step runs on the normal)
}


@pytest.mark.parametrize("with_callback", [False, True])
@pytest.mark.parametrize("method", sorted(FORWARDS))
def test_no_forward_product_per_iteration_for_diagnostics(method, with_callback):
    """A solver applies ``A`` only where its method needs it, plus once for the final
    residual where no iterate's product gives it; a callback costs no product either."""
    base = _problem(method)
    A = Counting(base.operator)
    # (CGLS without sigma_y: no discrepancy stop, all N_ITER iterations run)
    problem = Problem(A, base.y, 0.0 if method == "cgls" else base.sigma_y)
    steps = []
    callback = (lambda k, n, x: steps.append(k)) if with_callback else None
    result = SOLVERS[method](problem, callback=callback, **_params(method, problem))
    assert A.forwards == FORWARDS[method], (A.forwards, A.adjoints, A.normals)
    assert result.residual is not None and result.residual.shape == problem.batch_shape
    if with_callback and method != "zf":
        assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 1
    if method == "cgsense":
        assert A.forwards <= 2 and A.normals == N_ITER  # from zero, r_0 = A^H y


@pytest.mark.parametrize("method", sorted(SOLVERS))
def test_residual_is_the_true_final_residual(method):
    problem = _problem(method)
    result = SOLVERS[method](problem, **_params(method, problem))
    expected = problem.residual(result.image)
    assert result.residual.shape == problem.batch_shape and not result.residual.is_complex()
    assert bool((expected > 1e-6).all())  # the check is not about zeros
    # float32 (CT) and recursively updated products agree to rounding, not bitwise
    rtol = 1e-4 if problem.operator.dtype == torch.float32 else 1e-9
    torch.testing.assert_close(result.residual, expected, rtol=rtol, atol=0)


def test_problem_caches_the_measurement_norm():
    problem = _mri()
    first = problem.y_norm
    assert problem.y_norm is first  # computed once
    torch.testing.assert_close(first, torch.linalg.vector_norm(problem.y, dim=(-3, -2, -1)))
    x = torch.zeros(2, 16, 16, dtype=C128)
    torch.testing.assert_close(problem.residual(x), torch.ones(2, dtype=F64))
