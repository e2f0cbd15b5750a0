"""Image quality metrics with the fastMRI conventions (used for CT as well).

- :func:`psnr` and :func:`nmse` are computed over the whole tensor (a volume or
  batch counts as one image), as fastMRI's ``evaluate.py`` does per volume.
- :func:`ssim` is the mean SSIM of each 2D slice (the last two dimensions),
  averaged over slices, with a 7x7 uniform window, ``K1 = 0.01``, ``K2 = 0.03`` and
  the sample covariance: exactly ``skimage.metrics.structural_similarity(slice_ref,
  slice_x, win_size=7, data_range=data_range)`` per slice, as fastMRI computes it.
- ``mask=`` (bool, broadcast to the images) restricts all three to the pixels where
  it is true (a CT scanner's field of view: padding outside it is not tissue): PSNR
  and NMSE over those pixels, the default data range inside it, SSIM over the 7x7
  windows wholly inside it. An empty or mis-shaped mask raises ``ValueError``.
- Complex images are compared by magnitude; numpy arrays are accepted. Metrics
  are computed in float64 on the input's device and returned as 0-dim tensors.

fastMRI passes ``data_range = ref.max()`` (the volume's maximum); the default here
is ``ref.max() - ref.min()``, which equals it for nonnegative magnitude images
whose minimum is 0 and is the usual choice for CT. Pass ``data_range=ref.max()``
to reproduce fastMRI's numbers exactly.

References: Wang, Bovik, Sheikh & Simoncelli (2004), "Image quality assessment:
from error visibility to structural similarity", IEEE Trans. Image Process.
13(4):600-612, eq. (13); Zbontar et al. (2018), "fastMRI: An open dataset and
benchmarks for accelerated MRI", arXiv:1811.08839, Section 5.

Example:
    >>> import torch
    >>> ref = torch.zeros(16, 16, dtype=torch.float64)
    >>> ref[4:12, 4:12] = 1.0
    >>> x = ref + 0.1
    >>> round(float(psnr(x, ref)), 6), round(float(nmse(x, ref)), 6)
    (20.0, 0.04)
    >>> 0.0 < float(ssim(x, ref)) < 1.0
    True
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medrecon.operators.base import LinearOperator

ArrayLike = torch.Tensor | np.ndarray

SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _as_real64(t: ArrayLike) -> torch.Tensor:
    t = torch.as_tensor(t)
    if t.is_complex():
        t = t.abs()
    return t.to(torch.float64)


def _pair(x: ArrayLike, ref: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    x, ref = _as_real64(x), _as_real64(ref)
    if x.shape != ref.shape:
        raise ValueError(f"metrics: image of shape {tuple(x.shape)} and reference of shape "
                         f"{tuple(ref.shape)} differ")
    return x, ref.to(x.device)


def _range(ref: torch.Tensor, data_range: float | torch.Tensor | None,
           mask: torch.Tensor | None = None) -> torch.Tensor:
    if data_range is None:
        inside = ref if mask is None else ref[mask]
        return inside.max() - inside.min()
    return torch.as_tensor(data_range, dtype=torch.float64, device=ref.device)


def _mask(mask: ArrayLike | None, shape: torch.Size, device: torch.device) -> torch.Tensor | None:
    """``mask`` as a boolean tensor broadcast to ``shape``; ``ValueError`` if empty."""
    if mask is None:
        return None
    m = torch.as_tensor(np.asarray(mask) if isinstance(mask, np.ndarray) else mask)
    try:
        m = torch.broadcast_to(m.to(device=device, dtype=torch.bool), shape)
    except RuntimeError:
        raise ValueError(f"metrics: mask of shape {tuple(m.shape)} does not fit images of "
                         f"shape {tuple(shape)}") from None
    if not bool(m.any()):
        raise ValueError("metrics: the mask selects no pixel")
    return m


def psnr(x: ArrayLike, ref: ArrayLike,
         data_range: float | torch.Tensor | None = None, *,
         mask: ArrayLike | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / mean((x - ref)^2))`` in dB.

    Over all elements (fastMRI's per-volume PSNR), or over those where ``mask``
    (broadcast to the images) is true, e.g. a CT scanner's field of view.
    ``data_range`` defaults to ``ref.max() - ref.min()`` (inside the mask); pass
    ``ref.max()`` for the fastMRI convention. Equals
    ``skimage.metrics.peak_signal_noise_ratio(ref, x, data_range=...)``.
    """
    x, ref = _pair(x, ref)
    m = _mask(mask, x.shape, x.device)
    diff = (x - ref) ** 2
    mse = torch.mean(diff if m is None else diff[m])
    return 10.0 * torch.log10(_range(ref, data_range, m) ** 2 / mse)


def ssim(x: ArrayLike, ref: ArrayLike,
         data_range: float | torch.Tensor | None = None, *,
         mask: ArrayLike | None = None) -> torch.Tensor:
    """Mean structural similarity of 2D slices (last two dims), averaged over slices.

    Wang et al. (2004), eq. (13), with local statistics from a 7x7 uniform window,
    sample covariance (factor ``N / (N - 1)``, ``N = 49``), ``C1 = (0.01 R)^2``,
    ``C2 = (0.03 R)^2`` for ``R = data_range`` (default ``ref.max() - ref.min()``,
    over the whole tensor), and the mean taken over the window positions that lie
    inside the image, as ``skimage.metrics.structural_similarity`` does
    (fastMRI's ``ssim``). Slices must be at least 7x7. With ``mask``, the data range
    is taken inside it and the mean over the window positions whose 7x7 window lies
    wholly inside it, in each slice (a field of view's interior), averaged over the
    slices holding such a window; ``ValueError`` if none does.
    """
    x, ref = _pair(x, ref)
    m = _mask(mask, x.shape, x.device)
    if x.ndim < 2 or min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"ssim needs 2D slices of at least {SSIM_WINDOW}x{SSIM_WINDOW}, "
                         f"got shape {tuple(x.shape)}")
    r = _range(ref, data_range, m)
    c1, c2 = (SSIM_K1 * r) ** 2, (SSIM_K2 * r) ** 2
    a = x.reshape(-1, 1, *x.shape[-2:])
    b = ref.reshape(-1, 1, *ref.shape[-2:])

    def mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, SSIM_WINDOW, stride=1)

    n = SSIM_WINDOW**2
    cov_norm = n / (n - 1)
    ux, uy = mean(a), mean(b)
    vx = cov_norm * (mean(a * a) - ux * ux)
    vy = cov_norm * (mean(b * b) - uy * uy)
    vxy = cov_norm * (mean(a * b) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    if m is None:
        return s.mean(dim=(1, 2, 3)).mean()
    inside = mean(m.reshape(a.shape).to(torch.float64)) > 1 - 1e-9
    counts = inside.sum(dim=(1, 2, 3))
    if not bool((counts > 0).any()):
        raise ValueError(f"ssim: the mask holds no {SSIM_WINDOW}x{SSIM_WINDOW} window")
    keep = counts > 0
    per_slice = torch.where(inside, s, torch.zeros_like(s)).sum(dim=(1, 2, 3))[keep] / counts[keep]
    return per_slice.mean()


def nmse(x: ArrayLike, ref: ArrayLike, *, mask: ArrayLike | None = None) -> torch.Tensor:
    """Normalised mean squared error ``||x - ref||^2 / ||ref||^2`` over all elements
    (or those where ``mask`` is true)."""
    x, ref = _pair(x, ref)
    m = _mask(mask, x.shape, x.device)
    if m is not None:
        x, ref = x[m], ref[m]
    return torch.sum((x - ref) ** 2) / torch.sum(ref**2)


def data_residual(operator: LinearOperator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Relative data residual ``||A x - y|| / ||y||`` per batch item (shape ``batch``).

    Uses the operator as is (complex data are not reduced to magnitudes);
    ``x`` and ``y`` must fit the operator's domain and range.
    """
    dims = tuple(range(-len(operator.range_shape), 0))
    residual = torch.linalg.vector_norm(operator(x) - y, dim=dims)
    y_norm = torch.linalg.vector_norm(y, dim=dims)
    return residual / y_norm.clamp_min(torch.finfo(y_norm.dtype).tiny)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, n_projections: int = 200,
                       generator: torch.Generator | None = None) -> float:
    """Sliced 2-Wasserstein distance between two point clouds ``(n, d)`` and ``(m, d)``.

    ``SW_2 = sqrt(E_theta W_2^2(theta^T a, theta^T b))`` over random unit directions
    (Bonneel, Rabin, Peyre, Pfister, J. Math. Imaging Vis. 51 (2015)); each 1-D
    distance compares sorted projections at matched quantiles.
    """
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1).to(a.dtype)
    directions = torch.randn(n_projections, a.shape[1], dtype=a.dtype, generator=generator)
    directions = directions / torch.linalg.vector_norm(directions, dim=1, keepdim=True)
    pa, pb = (a @ directions.T).sort(0).values, (b @ directions.T).sort(0).values
    n = min(len(pa), len(pb))
    qa = torch.linspace(0, len(pa) - 1, n).round().long()
    qb = torch.linspace(0, len(pb) - 1, n).round().long()
    return float(((pa[qa] - pb[qb]) ** 2).mean().sqrt())
