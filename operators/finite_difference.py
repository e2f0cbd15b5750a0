"""Forward finite differences: the discrete image gradient used by total variation.

:class:`FiniteDifference` maps an image ``(*batch, *shape)`` over its last ``ndim``
axes to ``(*batch, ndim, *shape)``: component ``k`` is ``x[i+1] - x[i]`` along axis
``k`` with a zero at the last index (Neumann boundary), as in Chambolle (2004).
Its adjoint is the negative divergence and its norm is below ``2 sqrt(ndim)``.

Example:
    >>> import torch
    >>> from medrecon.operators.finite_difference import FiniteDifference
    >>> G = FiniteDifference((4, 4))
    >>> G(torch.arange(16.0).reshape(4, 4))[:, 0, 0]
    tensor([4., 1.])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from medrecon.operators.base import LinearOperator


class FiniteDifference(LinearOperator):
    """Forward differences along each of the image axes (see module docstring)."""

    def __init__(self, shape: Sequence[int], dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu"):
        shape = tuple(shape)
        super().__init__(shape, (len(shape), *shape), dtype, device)
        self.ndim = len(shape)

    @property
    def norm_bound(self) -> float:
        """An upper bound of the operator norm, ``2 sqrt(ndim)``."""
        return 2.0 * math.sqrt(self.ndim)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        for k in range(self.ndim):
            axis = x.ndim - self.ndim + k
            d = torch.diff(x, dim=axis)
            pad = torch.zeros_like(x.narrow(axis, 0, 1))
            parts.append(torch.cat([d, pad], dim=axis))
        return torch.stack(parts, dim=x.ndim - self.ndim)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        lead = y.ndim - self.ndim - 1
        out = torch.zeros(y.shape[:lead] + y.shape[lead + 1:], dtype=y.dtype, device=y.device)
        for k in range(self.ndim):
            p = y.select(lead, k)
            axis = lead + k
            n = p.shape[axis]
            # -div: out[0] = -p[0]; out[i] = p[i-1] - p[i]; out[n-1] = p[n-2]
            inner = p.narrow(axis, 0, n - 1)
            shifted = torch.cat([torch.zeros_like(p.narrow(axis, 0, 1)), inner], dim=axis)
            current = torch.cat([inner, torch.zeros_like(p.narrow(axis, 0, 1))], dim=axis)
            out = out + shifted - current
        return out
