"""Operators on two ESPIRiT map sets stacked in one 2D image domain ``(2 H, W)``.

Soft SENSE (Uecker et al., "ESPIRiT - an eigenvalue approach to autocalibrating parallel
MRI: where SENSE meets GRAPPA", MRM 71:990-1001, 2014) reconstructs one image per map
set, ``y_c = M F(sum_s S_{s,c} x_s)``; the two set images lie one above the other, so the
solvers and the wavelet penalty see an ordinary 2D image (how a study uses them:
:mod:`medrecon.studies.mri_sets`).
"""

from __future__ import annotations

import torch

from medrecon.operators.base import LinearOperator
from medrecon.operators.kspace_crop import KSpaceCrop
from medrecon.operators.mri import Sense


class SoftSENSE(LinearOperator):
    """``A [x_1; x_2] = F(S_1 x_1 + S_2 x_2)`` on the stacked domain ``(2 H, W)``: the
    k-space operator ``F`` (mask and FFT) and the maps ``S_1`` of a one-set SENSE
    operator ``first`` (:class:`medrecon.operators.mri.Sense`) and the second map set
    ``second`` ``(coils, H, W)``. The sets are added in image space, so one application
    costs the one-set operator's FFTs; the adjoint stacks ``S_1^H F^H y`` over ``S_2^H
    F^H y``."""

    def __init__(self, first: Sense, second: torch.Tensor):
        if first.maps is None or tuple(second.shape) != tuple(first.maps.shape):
            raise ValueError("SoftSENSE: needs a multi-coil operator and a second map set "
                             "of the same shape")
        height, width = first.domain_shape
        super().__init__((2 * height, width), first.range_shape, first.dtype, first.device,
                         range_dtype=first.range_dtype, name="SoftSENSE")
        self.fourier, self.height = first.fourier, height
        self.maps = torch.stack([first.maps, second.to(first.maps)])  # (2, coils, H, W)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[..., :self.height, :], x[..., self.height:, :]], dim=-3)

    def _coil_images(self, x: torch.Tensor) -> torch.Tensor:
        return (self.maps * self._split(x).unsqueeze(-3)).sum(dim=-4)

    def _sets(self, coil_images: torch.Tensor) -> torch.Tensor:
        sets = (self.maps.conj() * coil_images.unsqueeze(-4)).sum(dim=-3)  # (..., 2, H, W)
        return torch.cat([sets[..., 0, :, :], sets[..., 1, :, :]], dim=-2)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fourier.forward(self._coil_images(x))

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._sets(self.fourier.adjoint(y))

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        return self._sets(self.fourier.normal(self._coil_images(x)))


class SetwiseCrop(LinearOperator):
    """``crop`` (:class:`medrecon.operators.kspace_crop.KSpaceCrop`, fine ``(H', W')`` to
    ``(H, W)``) on each set image of a stacked domain: ``(2 H', W')`` to ``(2 H, W)``."""

    def __init__(self, crop: KSpaceCrop):
        (fine_h, fine_w), (h, w) = crop.fine_shape, crop.shape
        super().__init__((2 * fine_h, fine_w), (2 * h, w), crop.dtype, crop.device,
                         name="SetwiseCrop")
        self.crop, self.fine_height, self.height = crop, fine_h, h

    @staticmethod
    def _each(op, x: torch.Tensor, height: int) -> torch.Tensor:
        return torch.cat([op(x[..., :height, :]), op(x[..., height:, :])], dim=-2)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._each(self.crop.forward, x, self.fine_height)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._each(self.crop.adjoint, y, self.height)

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        return self._each(self.crop.normal, x, self.fine_height)
