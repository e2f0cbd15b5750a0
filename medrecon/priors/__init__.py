"""Priors for the diffusion solvers: the denoiser contract, exact analytic priors
(Gaussian, Gaussian mixture) and adapters that wrap networks into the contract."""

from medrecon.priors.base import Denoiser, check_fits, prior_space, score
from medrecon.priors.gaussian import GaussianPrior
from medrecon.priors.mixture import GaussianMixturePrior

__all__ = ["Denoiser", "GaussianMixturePrior", "GaussianPrior", "check_fits", "prior_space",
           "score"]
