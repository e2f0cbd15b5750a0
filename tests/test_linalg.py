"""Batched conjugate gradients against closed forms (torch.linalg.solve)."""

from __future__ import annotations

import pytest
import torch

from medrecon.solvers.linalg import batched_dot, batched_norm, conjugate_gradient


def _hpd_batch(n: int, batch: int, dtype: torch.dtype, device: torch.device,
               seed: int = 0) -> torch.Tensor:
    """``batch`` different Hermitian positive-definite n x n matrices (condition ~ 100)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, n, n, generator=g, dtype=dtype)
    q, _ = torch.linalg.qr(z)
    eig = torch.logspace(0, 2, n, dtype=torch.float64).to(dtype)
    return (q * eig[None, None, :] @ q.mH).to(device)


def _batched_apply(m: torch.Tensor):
    return lambda v: (m @ v[..., None])[..., 0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_cg_equals_linalg_solve(dtype, device):
    m = _hpd_batch(12, 3, dtype, device)
    b = torch.randn(3, 12, generator=torch.Generator().manual_seed(1), dtype=dtype).to(device)
    x, n_run, history = conjugate_gradient(_batched_apply(m), b, torch.zeros_like(b),
                                           n_iter=200, tol=1e-13, ndim=1)
    expected = torch.linalg.solve(m, b)
    assert x.dtype == dtype
    torch.testing.assert_close(x, expected, rtol=1e-9, atol=1e-11)
    assert n_run < 200
    assert history.shape == (n_run, 3) and not history.is_complex()
    assert bool((history[-1] <= 1e-13).all())


def test_cg_image_shaped_vectors(device):
    """ndim=2: a diagonal positive operator on 2D arrays, batch of 2."""
    g = torch.Generator().manual_seed(2)
    d = (torch.rand(2, 5, 6, generator=g, dtype=torch.float64) + 0.5).to(device)
    b = torch.randn(2, 5, 6, generator=g, dtype=torch.float64).to(device)
    x, _, _ = conjugate_gradient(lambda v: d * v, b, torch.zeros_like(b), n_iter=100,
                                 tol=1e-14, ndim=2)
    torch.testing.assert_close(x, b / d, rtol=1e-12, atol=1e-12)


def test_cg_masks_converged_items(device):
    """An item that converges early keeps its iterate while the other one continues."""
    n = 10
    hard = _hpd_batch(n, 1, torch.float64, device)[0]
    m = torch.stack([torch.eye(n, dtype=torch.float64, device=device) * 2.0, hard])
    b = torch.randn(2, n, generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64).to(device)
    x0 = torch.zeros_like(b)
    x0_copy = x0.clone()
    x, n_run, history = conjugate_gradient(_batched_apply(m), b, x0, n_iter=100, tol=1e-12,
                                           ndim=1)
    torch.testing.assert_close(x0, x0_copy, rtol=0, atol=0)  # input not modified
    # the scaled identity is solved in one step; afterwards its history is frozen
    assert float(history[0, 0]) <= 1e-12
    assert bool((history[:, 0] == history[0, 0]).all())
    torch.testing.assert_close(x[0], b[0] / 2.0, rtol=0, atol=1e-15)
    torch.testing.assert_close(x[1], torch.linalg.solve(hard, b[1]), rtol=1e-9, atol=1e-11)
    assert 1 < n_run < 100  # stopped once the hard item converged, not at n_iter


def test_cg_already_converged_and_fixed_budget(device):
    m = _hpd_batch(6, 2, torch.float64, device)
    b = torch.randn(2, 6, generator=torch.Generator().manual_seed(4),
                    dtype=torch.float64).to(device)
    exact = torch.linalg.solve(m, b)
    x, n_run, history = conjugate_gradient(_batched_apply(m), b, exact, n_iter=50, tol=1e-10,
                                           ndim=1)
    assert n_run == 0 and history.shape == (0, 2)
    torch.testing.assert_close(x, exact)
    # tol = 0: exactly n_iter iterations, no early exit
    _, n_run, history = conjugate_gradient(_batched_apply(m), b, torch.zeros_like(b), n_iter=4,
                                           ndim=1)
    assert n_run == 4 and history.shape == (4, 2)


def test_batched_dot_is_conjugated():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(3, 4, 5, generator=g, dtype=torch.complex128)
    b = torch.randn(3, 4, 5, generator=g, dtype=torch.complex128)
    expected = (a.conj() * b).sum(dim=(-2, -1))
    torch.testing.assert_close(batched_dot(a, b, 2), expected)
    torch.testing.assert_close(batched_dot(b, a, 2), expected.conj())
    torch.testing.assert_close(batched_dot(a, a, 2).real, batched_norm(a, 2) ** 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64,
                                   torch.complex128])
def test_norm_and_inner_helpers_match_torch(dtype):
    """norm / sq_norm / inner / inner_real (computed over real views) against
    torch.linalg.vector_norm and torch.vdot, with batch dimensions."""
    from medrecon.solvers.linalg import inner, inner_real, norm, sq_norm

    g = torch.Generator().manual_seed(6)
    a = torch.randn(3, 2, 5, 4, generator=g, dtype=dtype)
    b = torch.randn(3, 2, 5, 4, generator=g, dtype=dtype)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype in (torch.float32, torch.complex64) else {}
    for dims in [(-2, -1), (-3, -2, -1), (1,), None]:
        expected = torch.linalg.vector_norm(a, dim=dims)
        torch.testing.assert_close(norm(a, dims), expected, **tol)
        torch.testing.assert_close(sq_norm(a, dims), expected**2, **tol)
    torch.testing.assert_close(norm(a, -3, keepdim=True),
                               torch.linalg.vector_norm(a, dim=-3, keepdim=True), **tol)
    flat_a, flat_b = a.reshape(6, 20), b.reshape(6, 20)
    expected = torch.stack([torch.vdot(u, v) for u, v in zip(flat_a, flat_b)]).reshape(3, 2)
    torch.testing.assert_close(inner(a, b, (-2, -1)), expected, **tol)
    torch.testing.assert_close(inner_real(a, b, (-2, -1)), expected.real, **tol)
    torch.testing.assert_close(inner(a.conj(), b), torch.vdot(a.conj().flatten(), b.flatten()),
                               **tol)
    assert not norm(a).is_complex() and not inner_real(a, b).is_complex()
    # broadcasting: one vector against a batch
    torch.testing.assert_close(inner(a[0, 0], b, (-2, -1)),
                               (a[0, 0].conj() * b).sum(dim=(-2, -1)), **tol)
