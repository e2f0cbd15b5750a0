"""Helpers the diffusion samplers share: the starting noise and sample statistics."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from medrecon.priors.base import standard_noise
from medrecon.solvers.linalg import real_view
from medrecon.solvers.problem import Problem, Reconstruction


def start_noise(problem: Problem, n_samples: int, sigma_max: float,
                generator: torch.Generator | None) -> torch.Tensor:
    """``x_T = sigma_max * z`` of shape ``(n_samples, *batch, *domain)``."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    like = problem.image_like().expand(n_samples, *problem.image_like().shape)
    return sigma_max * standard_noise(like, generator)


def sample_statistics(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean image and pixelwise standard deviation (of the magnitude-free complex
    values: ``sqrt(E|x - mean|^2)``) over the first dimension; no std (``None``) for
    one sample, which says nothing about the spread."""
    mean = samples.mean(0)
    if samples.shape[0] < 2:
        return mean, None
    deviation = real_view(samples - mean)
    squared = deviation * deviation
    if samples.is_complex():
        squared = squared.sum(-1)
    std = squared.sum(0).div(samples.shape[0] - 1).sqrt()
    return mean, std


def mapped_record(record: Reconstruction, transform: Callable[[torch.Tensor], torch.Tensor],
                  std_transform: Callable[[torch.Tensor], torch.Tensor],
                  **info: object) -> Reconstruction:
    """``record`` with ``transform`` applied to its image and samples, the std recomputed
    from the transformed samples (:func:`sample_statistics`) or, without samples,
    ``std_transform(std)``; ``info`` added to its info."""
    samples, std = record.samples, record.std
    if samples is not None:
        samples = transform(samples)
        std = sample_statistics(samples)[1] if std is not None else None
    elif std is not None:
        std = std_transform(std)
    return dataclasses.replace(record, image=transform(record.image), samples=samples,
                               std=std, info={**record.info, **info})
