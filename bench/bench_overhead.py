"""Solver overhead: each medrecon solver against a minimal hand-written loop.

For CG-SENSE (8-coil Cartesian and radial with the Toeplitz normal), CGLS, SIRT and
TV (parallel-beam CT, ASTRA on the CPU), L1-wavelet (8-coil Cartesian MRI), DDS and
DPS (CT, a small untrained EDM-preconditioned network), times the medrecon solver
and a minimal loop doing the same arithmetic with the same operator and denoiser
(plain CG on ``A.normal`` and so on; no batching masks, no stopping tests, no
checks). Both produce the same outputs, the image and the final relative data
residual ``||A x - y|| / ||y||`` (one product with ``A`` where the iteration has
none that gives it), so the difference is the solvers' bookkeeping. Runs are
interleaved (medrecon, minimal, minimal, medrecon, ...) after a warm-up, each sample
repeating a short solve to about half a second, with one
torch thread, timed by the process's CPU time (``--wall`` for wall time). The table
gives the fastest run of each (``overhead = medrecon / minimal - 1`` of those: another
process on a shared machine can only add time, so the minimum is the figure least
disturbed by it) and, for judging the spread, the ratio of the medians.

    python bench/bench_overhead.py [--quick] [--repeats 9]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch

from medrecon.operators.ct import CTProjector
from medrecon.operators.ct_geometry import CTGeometry
from medrecon.operators.finite_difference import FiniteDifference
from medrecon.operators.mri import CartesianMRI
from medrecon.operators.nufft import NonCartesianMRI
from medrecon.operators.sampling import radial_trajectory, random_mask
from medrecon.operators.wavelet import Wavelet2D
from medrecon.priors.network import EDMDenoiser, TinyDenoiserNet
from medrecon.solvers.cgsense import cgsense
from medrecon.solvers.classical import cgls, sirt, tv
from medrecon.solvers.dds import dds
from medrecon.solvers.dps import dps
from medrecon.solvers.l1wavelet import l1wavelet
from medrecon.solvers.problem import Problem
from medrecon.solvers.schedules import karras

TARGET = 0.05
WALL = False
GATED = {"cgsense", "cgsense radial", "cgls", "l1wavelet", "tv", "dds", "dps"}


# --------------------------------------------------------------------------- arithmetic
def _r(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(x) if x.is_complex() else x


def sqn(x: torch.Tensor) -> torch.Tensor:
    """``||x||^2`` (over the real view: complex reductions are slow on the CPU)."""
    v = _r(x)
    return (v * v).sum()


def dot_re(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (_r(x) * _r(y)).sum()


def rel_residual(A, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (sqn(A(x) - y) / sqn(y)).sqrt()


def cg(apply, b: torch.Tensor, x: torch.Tensor | None, n: int) -> torch.Tensor:
    """Plain CG on ``apply(x) = b`` (from zero when ``x`` is None)."""
    if x is None:
        x, r = torch.zeros_like(b), b.clone()
    else:
        r = b - apply(x)
    p, rr = r.clone(), sqn(r)
    for _ in range(n):
        ap = apply(p)
        alpha = rr / dot_re(p, ap)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = sqn(r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


# --------------------------------------------------------------------------- minimal loops
def minimal_cgsense(A, y, n):
    x = cg(A.normal, A.adjoint(y), None, n)
    return x, rel_residual(A, x, y)


def minimal_cgls(A, y, n):
    x = torch.zeros(A.domain_shape, dtype=A.dtype)
    r = y - A(x)
    s = A.adjoint(r)
    p, gamma = s, sqn(s)
    for _ in range(n):
        q = A(p)
        alpha = gamma / sqn(q)
        x = x + alpha * p
        r = r - alpha * q
        s = A.adjoint(r)
        gamma_new = sqn(s)
        p = s + (gamma_new / gamma) * p
        gamma = gamma_new
    return x, rel_residual(A, x, y)


def minimal_sirt(A, y, n):
    def reciprocal(v):
        return torch.where(v > torch.finfo(v.dtype).eps * v.abs().max(), 1.0 / v, 0.0)

    row = reciprocal(A(torch.ones(A.domain_shape, dtype=A.dtype)))
    col = reciprocal(A.adjoint(torch.ones(A.range_shape, dtype=A.range_dtype)))
    x = torch.zeros(A.domain_shape, dtype=A.dtype)
    r = y - A(x)
    for _ in range(n):
        x = (x + col * A.adjoint(row * r)).clamp_min(0.0)
        r = y - A(x)
    return x, (sqn(r) / sqn(y)).sqrt()


def minimal_tv(A, y, n, weight, norm_a):
    G = FiniteDifference(A.domain_shape, dtype=A.dtype)
    scale = G.norm_bound / norm_a
    radius, ys = weight * scale**2, scale * y
    step = 0.99 / (math.sqrt(2.0) * G.norm_bound)
    x = torch.zeros(A.domain_shape, dtype=A.dtype)
    ax, gx = scale * A(x), G(x)
    ax_bar, gx_bar = ax, gx
    p, q = torch.zeros_like(ys), torch.zeros_like(gx)
    for _ in range(n):
        p = (p + step * (ax_bar - ys)) / (1.0 + step)
        q = q + step * gx_bar
        q_norm = torch.linalg.vector_norm(q, dim=0, keepdim=True)
        q = q * torch.where(q_norm > radius, radius / q_norm.clamp_min(1e-30), 1.0)
        x = x - step * (scale * A.adjoint(p) + G.adjoint(q))
        ax_new, gx_new = scale * A(x), G(x)
        ax_bar, gx_bar = 2 * ax_new - ax, 2 * gx_new - gx
        ax, gx = ax_new, gx_new
    return x, (sqn(ax - ys) / sqn(ys)).sqrt()


def minimal_l1wavelet(A, y, n, weight, norm_a):
    W = Wavelet2D(A.domain_shape, "db4", None, dtype=A.dtype)
    step = 1.0 / norm_a**2
    x = torch.zeros(A.domain_shape, dtype=A.dtype)
    ax = A(x)
    z, az, t = x, ax, 1.0
    for _ in range(n):
        v = z - step * A.adjoint(az - y)
        c = W(v)
        mag = c.abs()
        x_new = W.adjoint(c * ((mag - step * weight).clamp_min(0.0) / mag.clamp_min(1e-30)))
        ax_new = A(x_new)
        t_new = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        m = (t - 1.0) / t_new
        z, az = x_new + m * (x_new - x), ax_new + m * (ax_new - ax)
        x, ax, t = x_new, ax_new, t_new
    return x, (sqn(ax - y) / sqn(y)).sqrt()


def minimal_dds(A, y, D, sigmas, cg_iter, eta, gamma, seed):
    g = torch.Generator().manual_seed(seed)
    s_all = [float(s) for s in sigmas] + [0.0]
    aty = A.adjoint(y)
    x = s_all[0] * torch.randn((1, *A.domain_shape), generator=g, dtype=A.dtype)
    with torch.no_grad():
        for s, s_next in zip(s_all[:-1], s_all[1:]):
            x0 = D(x, s)
            x_dc = cg(lambda v: v + gamma * A.normal(v), x0 + gamma * aty, x0, cg_iter)
            if s_next == 0:
                break
            eps = (x - x0) / s
            z = torch.randn(x.shape, generator=g, dtype=x.dtype)
            x = x_dc + s_next * (eta * z + (1 - eta**2) ** 0.5 * eps)
        return x_dc[0], rel_residual(A, x_dc[0], y)


def minimal_dps(A, y, D, sigmas, zeta, seed):
    g = torch.Generator().manual_seed(seed)
    s_all = [float(s) for s in sigmas] + [0.0]
    x = s_all[0] * torch.randn((1, *A.domain_shape), generator=g, dtype=A.dtype)
    for s, s_next in zip(s_all[:-1], s_all[1:]):
        x = x.detach().requires_grad_(True)
        x0 = D(x, s)
        misfit = y - A(x0)
        (grad,) = torch.autograd.grad(sqn(misfit).sqrt(), x)
        ratio = s_next**2 / s**2
        with torch.no_grad():
            x = ratio * x + (1 - ratio) * x0
            if s_next > 0:
                z = torch.randn(x.shape, generator=g, dtype=x.dtype)
                x = x + (s_next**2 * (s**2 - s_next**2) / s**2) ** 0.5 * z
            x = x - zeta * grad
    return x0.detach()[0], (sqn(misfit.detach()) / sqn(y)).sqrt()


# --------------------------------------------------------------------------- set-ups
def _maps(n_coils: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(n_coils, n, n, generator=g, dtype=torch.complex64)
    return maps / (maps.abs() ** 2).sum(0).sqrt()


def _mri_image(n: int) -> torch.Tensor:
    c = (torch.arange(n) - (n - 1) / 2) / (n / 2)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    body = ((xx / 0.8) ** 2 + (yy / 0.65) ** 2 <= 1).float() * (1 + 0.3 * xx)
    return (body * torch.exp(1j * math.pi * (0.4 * xx + 0.3 * yy**2))).to(torch.complex64)


def _ct_image(n: int) -> torch.Tensor:
    c = (torch.arange(n) - (n - 1) / 2) / (n / 2)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    body = ((xx / 0.85) ** 2 + (yy / 0.7) ** 2 <= 1).float()
    insert = (((xx + 0.3) / 0.2) ** 2 + (yy / 0.3) ** 2 <= 1).float()
    return 0.02 * (body + 0.5 * insert)


def cases(quick: bool) -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    n = 128
    iters = 10 if quick else 20
    steps = 8 if quick else 15
    out = []

    # CG-SENSE, Cartesian: 8 coils, 4x column undersampling
    A = CartesianMRI((n, n), random_mask(n, 4, 0.08, seed=0), _maps(8, n, 1))
    y = A(_mri_image(n))
    P = Problem(A, y)
    out.append(("cgsense", lambda: cgsense(P, n_iter=iters, tol=0.0),
                lambda: minimal_cgsense(A, y, iters)))

    # CG-SENSE, radial with the Toeplitz normal: 8 coils, 64 half-spokes of 128
    R = NonCartesianMRI((n, n), radial_trajectory(64, n, (n, n)), _maps(8, n, 2),
                        toeplitz=True)
    yr = R(_mri_image(n))
    PR = Problem(R, yr)
    out.append(("cgsense radial", lambda: cgsense(PR, n_iter=iters, tol=0.0),
                lambda: minimal_cgsense(R, yr, iters)))

    # CT 128^2, 60 parallel-beam views, ASTRA on the CPU
    C = CTProjector(CTGeometry.parallel((n, n), n_views=60))
    yc = C(_ct_image(n))
    PC = Problem(C, yc)
    out.append(("cgls", lambda: cgls(PC, n_iter=iters, tol=0.0),
                lambda: minimal_cgls(C, yc, iters)))
    out.append(("sirt", lambda: sirt(PC, n_iter=iters),
                lambda: minimal_sirt(C, yc, iters)))
    norm_c = C.norm(generator=torch.Generator().manual_seed(0))
    w_tv = 1e-4 * norm_c**2 * 0.03
    out.append(("tv", lambda: tv(PC, weight=w_tv, n_iter=iters, operator_norm=norm_c),
                lambda: minimal_tv(C, yc, iters, w_tv, norm_c)))

    # L1-wavelet on the Cartesian problem
    norm_a = A.norm(generator=torch.Generator().manual_seed(0))
    w_l1 = 1e-3
    out.append(("l1wavelet",
                lambda: l1wavelet(P, weight=w_l1, n_iter=iters, operator_norm=norm_a),
                lambda: minimal_l1wavelet(A, y, iters, w_l1, norm_a)))

    # diffusion solvers on the CT problem, a small untrained network
    torch.manual_seed(0)
    net = TinyDenoiserNet(1, 16).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    D = EDMDenoiser(net, is_complex=False, scale=1.0, offset=0.0)
    sigmas = karras(0.01, 20.0, steps)
    PN = Problem(C, yc, sigma_y=0.01)
    out.append(("dds", lambda: dds(PN, D, sigmas, cg_iter=5, eta=0.5,
                                   generator=torch.Generator().manual_seed(0)),
                lambda: minimal_dds(C, yc, D, sigmas, 5, 0.5, 1.0, 0)))
    out.append(("dps", lambda: dps(PN, D, sigmas, zeta=0.5,
                                   generator=torch.Generator().manual_seed(0)),
                lambda: minimal_dps(C, yc, D, sigmas, 0.5, 0)))
    return out


SAMPLE_SECONDS = 0.5
"""A timed sample repeats a short solve until it lasts about this long: a single solve of
40 ms varied by +-10 % between runs, more than the 5 % being measured."""


def _time(fn: Callable[[], object], calls: int = 1) -> float:
    """CPU seconds of this process per call, over ``calls`` calls (with one torch thread
    this is the work done, robust to other processes competing for the cores; ``--wall``
    for wall time)."""
    clock = time.perf_counter if WALL else time.process_time
    start = clock()
    for _ in range(calls):
        fn()
    return (clock() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations and steps")
    parser.add_argument("--repeats", type=int, default=9, help="timed pairs per solver")
    parser.add_argument("--wall", action="store_true",
                        help="time by the wall clock instead of the process's CPU time")
    args = parser.parse_args()
    global WALL
    WALL = args.wall
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, cpu, threads {torch.get_num_threads()}, "
          f"{'quick' if args.quick else 'full'} configuration, {args.repeats} repeats, "
          f"{'wall' if WALL else 'process CPU'} time")
    print(f"{'solver':<16}{'medrecon s':>12}{'minimal s':>11}{'overhead':>10}"
          f"{'median ratio':>14}  target")
    failed = []
    for name, medrecon, minimal in cases(args.quick):
        medrecon()  # warm-up, and the number of calls per sample
        calls = max(1, math.ceil(SAMPLE_SECONDS / max(_time(minimal), 1e-6)))
        t_med, t_min = [], []
        for k in range(args.repeats):
            if k % 2 == 0:
                t_med.append(_time(medrecon, calls))
                t_min.append(_time(minimal, calls))
            else:
                t_min.append(_time(minimal, calls))
                t_med.append(_time(medrecon, calls))
        med, mini = min(t_med), min(t_min)
        overhead = med / mini - 1
        median_ratio = statistics.median(t_med) / statistics.median(t_min)
        gated = name in GATED
        verdict = ("ok" if overhead <= TARGET else "OVER") if gated else "-"
        if gated and overhead > TARGET:
            failed.append(name)
        print(f"{name:<16}{med:>12.4f}{mini:>11.4f}{overhead:>10.1%}{median_ratio:>14.3f}"
              f"  {verdict}", flush=True)
    if failed:
        print(f"over the {TARGET:.0%} target: {', '.join(failed)}")


if __name__ == "__main__":
    main()
