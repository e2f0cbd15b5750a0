"""Classical reconstruction: filtered back projection, CGLS, SIRT and TV by PDHG.

Each method is a plain function ``name(problem, *, ..., callback=None) ->
Reconstruction`` over a :class:`~medrecon.solvers.problem.Problem` ``y = A x + n``.
They are batched (every leading dimension of ``y`` is an independent problem
with its own step lengths and stopping), complex-safe where the method allows,
and run on the operator's device in the operator's dtype. ``residual`` holds the
final relative data residual ``||A x - y|| / ||y||``, shape ``batch``, taken from
products the iteration has anyway where it can (SIRT, TV) and from one extra
product with ``A`` otherwise (FBP; CGLS, whose recursively updated residual vector
drifts from the true one in floating point). Nothing is computed per iteration
beyond the method itself; pass a ``callback`` for per-iteration diagnostics.

Example:
    >>> import torch
    >>> from medrecon.operators.base import MatrixOperator
    >>> from medrecon.solvers.classical import cgls
    >>> from medrecon.solvers.problem import Problem
    >>> A = MatrixOperator(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]],
    ...                                 dtype=torch.float64))
    >>> result = cgls(Problem(A, torch.tensor([1.0, 3.0, 4.0], dtype=torch.float64)))
    >>> result.image.round(decimals=10), result.info["stopped"]
    (tensor([1., 2.], dtype=torch.float64), 'tolerance')
"""

from __future__ import annotations

import math

import torch

from medrecon.operators.finite_difference import FiniteDifference
from medrecon.solvers.linalg import expand_to, norm, safe_divide, sq_norm
from medrecon.solvers.problem import Callback, Problem, Reconstruction

#: Discrepancy-principle safety factor: CGLS stops an item once
#: ``||A x - y|| <= DISCREPANCY_TAU * sigma_y * sqrt(m)`` (``m`` measurements per item),
#: the expected norm of the noise (Morozov's principle with ``tau = 1``).
DISCREPANCY_TAU = 1.0

_RUNNING, _TOLERANCE, _DISCREPANCY = 0, 1, 2


def fbp(problem: Problem, *, filter: str = "ram-lak",
        callback: Callback | None = None) -> Reconstruction:
    """Filtered back projection, handed to the operator's own ``fbp`` (ASTRA for CT).

    Kak & Slaney (1988), Principles of Computerized Tomographic Imaging, IEEE Press,
    Section 3.3 (parallel beam) and 3.4 (fan beam); which one runs, and how, is the
    operator's business (ASTRA's FBP; CPU fan beam is rebinned to parallel). Not
    iterative: ``iterations`` is 1.

    Args:
        problem: a problem whose operator has ``fbp(sinogram, filter=...)`` (a
            :class:`~medrecon.operators.ct.CTProjector`).
        filter: the ramp filter's apodisation (``"ram-lak"``, ``"shepp-logan"``,
            ``"cosine"``, ``"hamming"``, ``"hann"``).
        callback: called once with ``(1, 1, image)``.

    Raises:
        ValueError: the operator has no filtered back projection.

    Example:
        >>> import torch
        >>> from medrecon.operators.ct import CTProjector
        >>> from medrecon.operators.ct_geometry import CTGeometry
        >>> A = CTProjector(CTGeometry.parallel((32, 32), n_views=45))
        >>> fbp(Problem(A, A(torch.ones(32, 32)))).image.shape
        torch.Size([32, 32])
    """
    reconstruct = getattr(problem.operator, "fbp", None)
    if reconstruct is None:
        raise ValueError("fbp needs an operator with a filtered back projection (a CT projector)")
    image = reconstruct(problem.y, filter=filter)
    if callback is not None:
        callback(1, 1, image)
    return Reconstruction(image=image, method="fbp", iterations=1,
                          residual=problem.residual(image), info={"filter": filter})


def cgls(problem: Problem, *, n_iter: int = 50, tol: float = 1e-6,
         x0: torch.Tensor | None = None, callback: Callback | None = None) -> Reconstruction:
    """Least squares ``min_x ||A x - y||^2`` by CGLS (conjugate gradients on ``A`` and ``A^H``).

    Hestenes & Stiefel (1952), J. Res. Nat. Bur. Standards 49(6), in the form of
    Björck (1996), Numerical Methods for Least Squares Problems, SIAM, Section 7.4
    (algorithm CGLS): the residual ``r = y - A x`` and ``s = A^H r`` are
    updated by products with ``A`` and ``A^H``, so ``A^H A`` is never formed. Every
    batch item has its own step lengths and stops on its own (its later steps
    are masked to zero):

    - ``"tolerance"``: ``||A^H r_k|| <= tol * ||A^H r_0||`` (the normal-equation
      residual relative to its initial value);
    - ``"discrepancy"`` (only when ``problem.sigma_y > 0``): ``||A x_k - y|| <=
      tau * sigma_y * sqrt(m)`` with ``tau =`` :data:`DISCREPANCY_TAU` ``= 1`` and ``m``
      the number of measurements per item (Morozov's discrepancy principle; the
      iteration count is the regulariser, Hanke 1995, Conjugate Gradient Type
      Methods for Ill-Posed Problems, Chapter 3). ``sigma_y`` is the standard
      deviation per measurement (``E|n_i|^2 = sigma_y^2`` for complex data).

    ``info["stopped"]`` is ``"max_iter"`` when some item used every iteration, else
    ``"discrepancy"`` when some item stopped by the discrepancy principle, else
    ``"tolerance"``; ``info["stopped_items"]`` gives the reason per item (batch
    flattened). Early stopping costs one host synchronisation per iteration.

    Example:
        >>> import torch
        >>> from medrecon.operators.base import MatrixOperator
        >>> A = MatrixOperator(torch.eye(3, dtype=torch.complex128)[:, :2] * 2)
        >>> y = torch.tensor([2.0, 2j, 0.5], dtype=torch.complex128)
        >>> cgls(Problem(A, y), n_iter=5).image
        tensor([1.+0.j, 0.+1.j], dtype=torch.complex128)
    """
    A, y = problem.operator, problem.y
    nd = len(A.domain_shape)
    dims, range_dims = tuple(range(-nd, 0)), problem.range_dims
    x = problem.start(x0)
    r = y - A(x)
    s = A.adjoint(r)
    p = s
    gamma = sq_norm(s, dims)
    threshold = tol**2 * gamma
    discrepancy = problem.sigma_y > 0
    # the discrepancy rule compares ||r||^2, of the residual vector CGLS maintains anyway
    bound2 = (DISCREPANCY_TAU * problem.sigma_y) ** 2 * math.prod(A.range_shape)
    may_stop = tol > 0 or discrepancy
    within_noise = sq_norm(r, range_dims) <= bound2 if discrepancy else torch.zeros_like(
        gamma, dtype=torch.bool)
    status = _stop_status(torch.full_like(gamma, _RUNNING, dtype=torch.int64),
                          gamma <= threshold, within_noise)
    iterations = 0
    for k in range(n_iter):
        if may_stop and not bool((status == _RUNNING).any()):
            break
        running = status == _RUNNING
        # step along p: alpha = ||s||^2 / ||A p||^2
        q = A(p)
        alpha = torch.where(running, safe_divide(gamma, sq_norm(q, range_dims)), 0.0)
        x = torch.addcmul(x, expand_to(alpha, nd), p)
        r = torch.addcmul(r, expand_to(alpha, len(range_dims)), q, value=-1)
        # new direction: p = s + beta p with beta = ||s_new||^2 / ||s||^2
        s = A.adjoint(r)
        gamma_new = sq_norm(s, dims)
        beta = torch.where(running, safe_divide(gamma_new, gamma), 0.0)
        p = torch.addcmul(s, expand_to(beta, nd), p)
        gamma = torch.where(running, gamma_new, gamma)
        iterations = k + 1
        if discrepancy:
            within_noise = sq_norm(r, range_dims) <= bound2
        status = _stop_status(status, gamma <= threshold, within_noise)
        if callback is not None:
            callback(k + 1, n_iter, x)
    names = {_RUNNING: "max_iter", _TOLERANCE: "tolerance", _DISCREPANCY: "discrepancy"}
    items = tuple(names[int(v)] for v in status.reshape(-1).tolist())
    stopped = next((why for why in ("max_iter", "discrepancy") if why in items), "tolerance")
    return Reconstruction(image=x, method="cgls", iterations=iterations,
                          residual=problem.residual(x),
                          info={"stopped": stopped, "stopped_items": items})


def _stop_status(status: torch.Tensor, converged: torch.Tensor,
                 within_noise: torch.Tensor) -> torch.Tensor:
    """Mark running items that now meet a stopping rule (the discrepancy rule wins a tie)."""
    running = status == _RUNNING
    status = torch.where(running & converged, _TOLERANCE, status)
    return torch.where(running & within_noise, _DISCREPANCY, status)


def _reciprocal(sums: torch.Tensor) -> torch.Tensor:
    """``1 / sums`` where the sums are clearly positive, 0 where they are ~0."""
    floor = torch.finfo(sums.dtype).eps * sums.abs().max()
    return torch.where(sums > floor, 1.0 / sums.clamp_min(torch.finfo(sums.dtype).tiny), 0.0)


def sirt(problem: Problem, *, n_iter: int = 100, nonnegative: bool = True,
         x0: torch.Tensor | None = None, callback: Callback | None = None) -> Reconstruction:
    """SIRT: ``x <- x + C A^T R (y - A x)`` with ``R = 1 / (A 1)``, ``C = 1 / (A^T 1)``.

    Gregor & Benson (2008), "Computational analysis and improvement of SIRT",
    IEEE Trans. Med. Imaging 27(7):918-924, eq. (1) (the form ASTRA implements);
    row and column sums that are ~0 (rays missing the image, pixels no ray sees)
    get weight 0. Meant for real operators with nonnegative entries (CT
    projectors), for which SIRT is a gradient descent that converges to a minimiser
    of the weighted least squares ``||R^(1/2) (A x - y)||^2`` (the least-squares
    solution for consistent data); ``nonnegative`` projects each iterate onto
    ``x >= 0`` (then the minimiser over ``x >= 0``).

    Raises:
        ValueError: the operator is complex.

    Example:
        >>> import torch
        >>> from medrecon.operators.base import MatrixOperator
        >>> A = MatrixOperator(torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 2.0]],
        ...                                 dtype=torch.float64))
        >>> x = sirt(Problem(A, torch.tensor([3.0, 1.0, 4.0], dtype=torch.float64)),
        ...          n_iter=200).image
        >>> torch.allclose(x, torch.tensor([1.0, 2.0], dtype=torch.float64))
        True
    """
    A, y = problem.operator, problem.y
    if A.dtype.is_complex or A.range_dtype.is_complex:
        raise ValueError("sirt needs a real operator with nonnegative entries (a CT projector)")
    row_weights = _reciprocal(A(torch.ones(A.domain_shape, dtype=A.dtype, device=A.device)))
    col_weights = _reciprocal(A.adjoint(torch.ones(A.range_shape, dtype=A.range_dtype,
                                                   device=A.device)))
    x = problem.start(x0)
    r = y - A(x)
    for k in range(n_iter):
        x = torch.addcmul(x, col_weights, A.adjoint(row_weights * r))
        if nonnegative:
            x = x.clamp_min(0.0)
        r = y - A(x)
        if callback is not None:
            callback(k + 1, n_iter, x)
    # r = y - A x of the last iterate, computed by the iteration itself
    return Reconstruction(image=x, method="sirt", iterations=max(int(n_iter), 0),
                          residual=problem.relative(r))


def tv_objective(problem: Problem, x: torch.Tensor, weight: float) -> torch.Tensor:
    """``1/2 ||A x - y||^2 + weight * TV(x)`` per batch item, with the isotropic
    ``TV(x) = sum_pixels ||(G x)_pixel||_2`` of forward differences ``G`` (the objective
    :func:`tv` minimises)."""
    A = problem.operator
    G = FiniteDifference(A.domain_shape, dtype=A.dtype, device=A.device)
    nd = len(A.domain_shape)
    data = 0.5 * sq_norm(A(x) - problem.y, problem.range_dims)
    grad_norm = norm(G(x), dim=-(nd + 1))
    return data + weight * grad_norm.sum(dim=tuple(range(-nd, 0)))


def tv(problem: Problem, *, weight: float, n_iter: int = 200, nonnegative: bool = False,
       x0: torch.Tensor | None = None, callback: Callback | None = None,
       generator: torch.Generator | None = None,
       operator_norm: float | None = None) -> Reconstruction:
    """Total-variation regularised least squares by the primal-dual hybrid gradient method.

    Solves ``min_x 1/2 ||A x - y||^2 + weight * TV(x)`` (``TV`` isotropic, see
    :func:`tv_objective`; with ``nonnegative``, over ``x >= 0``) by Chambolle & Pock
    (2011), "A first-order primal-dual algorithm for convex problems with
    applications to imaging", J. Math. Imaging Vis. 40:120-145, Algorithm 1 with
    ``theta = 1``, on ``K = [A'; G]`` with ``G`` forward differences
    (:class:`~medrecon.operators.finite_difference.FiniteDifference`). The dual
    proximal maps are ``(p - sigma y') / (1 + sigma)`` for the data term and the
    pointwise projection of ``q`` onto the ball of radius ``weight'`` (norm over the
    gradient components) for TV.

    Scaling: the two blocks of ``K`` are balanced by ``A' = c A / ||A||`` and
    ``y' = c y / ||A||`` with ``c = 2 sqrt(ndim)``, the bound of ``||G||``. Since
    ``1/2 ||A x - y||^2 = (||A|| / c)^2 * 1/2 ||A' x - y'||^2``, the TV radius becomes
    ``weight' = weight (c / ||A||)^2`` and the minimiser is that of the stated
    objective. Unscaled, a CT projector (``||A||`` ~ 100) would dominate ``L`` and
    leave the TV steps tiny; scaling to ``||A'|| = 1`` instead of ``c`` needed more
    than four times the iterations for the same objective on a 128x128, 60-view CT
    test, and ``||A'|| = c`` was the most robust of the scalings tried (0.1c to 7c)
    over weights of two decades. Then
    ``L^2 = ||A'||^2 + ||G||^2 <= 2 c^2`` bounds ``||K||^2`` and ``tau = sigma = 0.99 / L``.
    ``||A||`` comes from power iteration (``A.norm(generator=generator)``) unless
    ``operator_norm`` is given.

    ``weight`` has the units of the data term over those of ``TV``: it scales like
    ``||A||^2`` times the image's value scale. On noiseless sparse-view CT,
    ``weight = 1e-4 .. 1e-3 * ||A||^2 * max(x)`` worked well; it must be chosen per
    task (noise level, resolution), so there is no default.

    Args:
        problem: ``y = A x + n``, batched; real or complex.
        weight: TV weight (>= 0).
        n_iter: PDHG iterations (each one ``A`` and one ``A^H`` product).
        nonnegative: constrain ``x >= 0`` (real images only).
        x0: initial image (zeros by default).
        callback: called after each iteration with ``(k, n_iter, x)``.
        generator: randomness of the power iteration for ``||A||``.
        operator_norm: ``||A||`` if already known (skips the power iteration).

    Example:
        >>> import torch
        >>> from medrecon.operators.base import Identity
        >>> steps = torch.cat([torch.zeros(8), torch.ones(8)]).double()
        >>> noisy = steps + 0.1 * torch.randn(16, generator=torch.Generator().manual_seed(0),
        ...                                   dtype=torch.float64)
        >>> problem = Problem(Identity((16,), torch.float64), noisy)
        >>> x = tv(problem, weight=0.2, operator_norm=1.0).image
        >>> bool(tv_objective(problem, x, 0.2) < tv_objective(problem, noisy, 0.2))
        True
    """
    A, y = problem.operator, problem.y
    if not weight >= 0:
        raise ValueError(f"tv weight must be >= 0, got {weight}")
    if nonnegative and A.dtype.is_complex:
        raise ValueError("tv: nonnegative needs a real image")
    G = FiniteDifference(A.domain_shape, dtype=A.dtype, device=A.device)
    nd = len(A.domain_shape)
    norm_a = A.norm(generator=generator) if operator_norm is None else float(operator_norm)
    if not norm_a > 0:
        raise ValueError("tv: the operator is zero (norm 0)")
    scale = G.norm_bound / norm_a
    radius = weight * scale**2
    y_scaled = scale * y
    step = 0.99 / (math.sqrt(2.0) * G.norm_bound)
    tiny = torch.finfo(problem.y_norm.dtype).tiny

    x = problem.start(x0)
    ax, gx = scale * A(x), G(x)
    ax_bar, gx_bar = ax, gx
    p, q = torch.zeros_like(y_scaled), torch.zeros_like(gx)
    for k in range(n_iter):
        # dual ascent: prox of sigma F* for the data term and for TV
        p = torch.add(p, ax_bar - y_scaled, alpha=step) / (1.0 + step)
        q = torch.add(q, gx_bar, alpha=step)
        q_norm = norm(q, dim=-(nd + 1), keepdim=True)
        q = q * torch.where(q_norm > radius, radius / q_norm.clamp_min(tiny), 1.0)
        # primal descent and extrapolation (theta = 1), K x_bar by linearity
        x = torch.sub(x, torch.add(G.adjoint(q), A.adjoint(p), alpha=scale), alpha=step)
        if nonnegative:
            x = x.clamp_min(0.0)
        ax_new, gx_new = scale * A(x), G(x)
        ax_bar, gx_bar = 2 * ax_new - ax, 2 * gx_new - gx
        ax, gx = ax_new, gx_new
        if callback is not None:
            callback(k + 1, n_iter, x)
    # ||A x - y|| from the scaled product the iteration has: ax - y' = scale (A x - y)
    residual = norm(ax - y_scaled, problem.range_dims) / scale / problem.y_norm
    return Reconstruction(image=x, method="tv", iterations=max(int(n_iter), 0),
                          residual=residual,
                          info={"weight": weight, "operator_norm": norm_a})

