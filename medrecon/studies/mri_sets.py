"""Soft SENSE with two ESPIRiT map sets, for the classical MRI methods (CG-SENSE, L1).

Uecker et al. ("ESPIRiT - an eigenvalue approach to autocalibrating parallel MRI: where
SENSE meets GRAPPA", MRM 71:990-1001, 2014) reconstruct with every map set whose
eigenvalue is close to 1, ``y_c = M F(sum_s S_{s,c} x_s)``, and show the set images'
root sum of squares: where one sensitivity vector per pixel cannot explain the coil
images (an object folded in from outside the field of view, or one that fills it, whose
coil images jump across the periodic edge) a second set takes up what the first cannot,
and the first-set model no longer forces an error into the whole image. The second set
is :func:`medrecon.operators.coils.espirit_second_set`; it is zero where one set is
enough, so on an object well inside the field of view nothing changes.

:class:`SoftSENSE` keeps a 2D image domain (what the solvers and the wavelet penalty
take): the two set images lie one above the other, ``(2 H, W)``, and :func:`combine`
turns a solution back into one ``(H, W)`` image, the root sum of squares of the two with
the first set's phase.
"""

from __future__ import annotations

import torch

from medrecon.operators.base import LinearOperator
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


def combine(image: torch.Tensor, height: int) -> torch.Tensor:
    """One image ``(..., H, W)`` from a stacked soft-SENSE solution ``(..., 2 H, W)``: the
    root sum of squares of the set images, with the phase of the first set's."""
    first, second = image[..., :height, :], image[..., height:, :]
    magnitude = torch.sqrt(first.abs() ** 2 + second.abs() ** 2)
    phase = torch.where(first.abs() > 0, first / first.abs().clamp_min(1e-30),
                        torch.ones_like(first))
    return magnitude * phase
