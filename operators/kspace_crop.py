"""The k-space crop from a finer image grid to a coarser one, and its adjoint.

For an image ``x'`` of shape ``(..., H', W')`` and a coarser ``(H, W)`` (``H <= H'``,
``W <= W'``), with the centred orthonormal FFTs of :mod:`medrecon.operators.mri`,

    C x' = s ifft2c_{H, W}(crop(fft2c_{H', W'}(x'))),    s = sqrt(H W / (H' W')),

``crop`` keeping the central ``H x W`` samples (the DC sample, index ``(H'//2, W'//2)``,
goes to ``(H//2, W//2)``, so the image centres match for odd sizes too). The factor ``s``
preserves the image intensity: a constant image stays the same constant. ``C`` is the
adjoint of zero-padding scaled by ``s``, ``C^H y = s ifft2c(pad(fft2c(y)))``, so ``C C^H =
s^2 I`` (``||C|| = s``) and ``C^H C = s^2 P`` with ``P`` the projection onto the images
band-limited to the coarse k-space. :meth:`KSpaceCrop.upsample` is ``C^H / s^2``: the
intensity-preserving zero-filled (sinc) interpolation, a right inverse of ``C``.

Example:
    >>> import torch
    >>> from medrecon.operators.kspace_crop import KSpaceCrop
    >>> C = KSpaceCrop((16, 16), (8, 8))
    >>> x = torch.full((8, 8), 2.0 + 0j)
    >>> bool(torch.allclose(C(C.upsample(x)), x, atol=1e-6))
    True
    >>> float(C.upsample(x).real.mean())
    2.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from medrecon.errors import OperatorShapeError
from medrecon.operators.base import LinearOperator
from medrecon.operators.mri import fft2c, ifft2c, image_shape_2d, require_complex


def _window(fine: tuple[int, int], coarse: tuple[int, int]) -> tuple[slice, slice]:
    """The central ``coarse`` block of a centred ``fine`` k-space (DC to DC)."""
    return tuple(slice(n // 2 - m // 2, n // 2 - m // 2 + m)  # type: ignore[return-value]
                 for n, m in zip(fine, coarse))


class KSpaceCrop(LinearOperator):
    """``C``: images ``fine_shape`` -> ``shape`` by cropping the centred k-space (module
    docstring); ``normal`` is ``s^2`` times the band-limiting projection (one FFT pair)."""

    def __init__(self, fine_shape: Sequence[int], shape: Sequence[int], *,
                 dtype: torch.dtype = torch.complex64, device: torch.device | str = "cpu"):
        require_complex(dtype, "KSpaceCrop")
        fine = image_shape_2d(fine_shape, "KSpaceCrop")
        coarse = image_shape_2d(shape, "KSpaceCrop")
        if coarse[0] > fine[0] or coarse[1] > fine[1]:
            raise OperatorShapeError(f"KSpaceCrop: the coarse shape {coarse} must fit in the "
                                     f"fine shape {fine}")
        super().__init__(fine, coarse, dtype, device, name="KSpaceCrop")
        self.fine_shape, self.shape = fine, coarse
        self.scale = math.sqrt(coarse[0] * coarse[1] / (fine[0] * fine[1]))
        self._window = _window(fine, coarse)

    def _crop(self, k: torch.Tensor) -> torch.Tensor:
        return k[(..., *self._window)]

    def _pad(self, k: torch.Tensor) -> torch.Tensor:
        out = k.new_zeros((*k.shape[:-2], *self.fine_shape))
        out[(..., *self._window)] = k
        return out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return ifft2c(self._crop(fft2c(x))) * self.scale

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return ifft2c(self._pad(fft2c(y))) * self.scale

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        k = fft2c(x)
        band = torch.zeros_like(k)
        band[(..., *self._window)] = k[(..., *self._window)]
        return ifft2c(band) * self.scale**2

    def upsample(self, y: torch.Tensor) -> torch.Tensor:
        """``C^H y / s^2``: ``y`` zero-filled in k-space onto the fine grid, intensity
        kept (``C(upsample(y)) = y``)."""
        return self.adjoint(y) / self.scale**2
