"""The method records: validated parameters, settings derived per task (DDS's gamma
from the operator's norm), repeatable runs, and the README's table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from medrecon.methods import (
    METHODS,
    MODALITIES,
    method,
    names,
    noise_factor,
    parameter_table,
)
from medrecon.operators.base import MatrixOperator
from medrecon.priors.gaussian import GaussianPrior
from medrecon.solvers.problem import Problem
from medrecon.solvers.schedules import karras, truncated
from medrecon.studies.mri import MRITask

README = Path(__file__).resolve().parents[1] / "README.md"


# ----------------------------------------------------------------------- records
@pytest.mark.parametrize("name", sorted(METHODS))
def test_defaults_validate_for_each_modality(name):
    record = METHODS[name]
    assert record.modalities and set(record.modalities) <= set(MODALITIES)
    assert set(record.modality_defaults) <= set(record.modalities)
    for modality in record.modalities:
        params = record.parameters(modality)
        # the defaults are themselves valid input, and None means "the default"
        assert record.params.model_validate(params.model_dump()) == params
        assert record.parameters(modality, dict.fromkeys(params.model_dump())) == params
        assert name in names(modality) and method(name, modality) is record
    for other in set(MODALITIES) - set(record.modalities):
        with pytest.raises(ValueError, match=f"does not reconstruct {other}"):
            method(name, other)


@pytest.mark.parametrize("name,given", [
    ("tv", {"iteration": 10}),            # misspelt: refused, not ignored
    ("fbp", {"weight": 1e-3}),            # another method's parameter
    ("zf", {"iterations": 3}),
    ("tv", {"iterations": 0}),
    ("tv", {"weight": -1.0}),
    ("tv", {"weight": float("nan")}),
    ("cgsense", {"iterations": "5"}),     # no silent coercion
    ("cgsense", {"iterations": 2.5}),
    ("fbp", {"filter": "gauss"}),
    ("dds", {"eta": 1.5}),
    ("dds", {"sigma_min": 20.0}),         # above sigma_max
    ("dds", {"gamma": 3.0}),              # renamed relative_gamma: the old name is refused
    ("rmpvi", {"steps": 1}),
])
def test_unknown_or_bad_parameters_are_refused(name, given):
    with pytest.raises(ValidationError):
        METHODS[name].parameters(METHODS[name].modalities[0], given)


def test_parameters_are_frozen_and_unknown_methods_refused():
    params = METHODS["tv"].parameters("ct")
    with pytest.raises(ValidationError):
        params.iterations = 3
    assert METHODS["tv"].parameters("mri").iterations == 100  # modality default
    assert METHODS["tv"].parameters("mri", {"iterations": 7}).iterations == 7
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        method("magic", "ct")


def test_parameter_table_is_the_readme_s():
    text = README.read_text()
    missing = [row for row in parameter_table().splitlines() if row not in text]
    assert not missing, missing


# ----------------------------------------------------------------------- derived settings
def _task(seed: int = 1) -> MRITask:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(20, 16, generator=g, dtype=torch.complex128)
    y = A @ torch.randn(16, generator=g, dtype=torch.complex128)
    y = y + 0.01 * torch.randn(20, generator=g, dtype=torch.complex128)
    return MRITask(Problem(MatrixOperator(A), y), torch.arange(20.0), scale=1.0)


def _prior() -> GaussianPrior:
    prior = GaussianPrior(torch.zeros(16, dtype=torch.complex128), 1.0)
    prior.scale = 2.0
    return prior


def test_dds_gamma_scales_with_the_operator_norm():
    task, prior = _task(), _prior()
    norm = float(torch.linalg.matrix_norm(task.problem.operator.matrix, 2))
    record = METHODS["dds"]
    params = record.parameters("mri")
    problem, arguments = record.prepare(task, params, prior, None)
    mapped = arguments["denoiser"]
    assert mapped.scale != prior.scale  # re-expressed in the task's units
    noise = task.noise_level() / (norm * mapped.scale)  # in the prior's space
    assert arguments["gamma"] == pytest.approx(params.relative_gamma / (norm * mapped.scale) ** 2
                                               * noise_factor(noise, params.reference_noise),
                                               rel=1e-3)
    full = karras(params.sigma_min, params.sigma_max, params.steps)
    assert torch.equal(arguments["sigmas"], truncated(full, params.warm_start))
    assert 0 < len(arguments["sigmas"]) < params.steps and arguments["eta"] == params.eta
    assert torch.equal(arguments["x_init"], task.rough_image())  # the warm start's image
    cold = record.prepare(task, record.parameters("mri", {"warm_start": 0.0}), prior, None)[1]
    assert torch.equal(cold["sigmas"], full) and "x_init" not in cold
    assert problem.sigma_y == pytest.approx(task.noise_level())
    # the same relative weight on a twice larger operator: a quarter of the gamma
    twice = MRITask(Problem(task.problem.operator * 2.0, 2.0 * task.problem.y),
                    task.radius, 1.0)
    _, doubled = record.prepare(twice, params, prior, None)
    assert doubled["gamma"] == pytest.approx(arguments["gamma"] / 4, rel=1e-3)


class _NoisyTask(MRITask):
    """A task whose noise level is set, not estimated."""

    def __init__(self, problem, noise: float):
        super().__init__(problem, torch.arange(20.0), 1.0)
        self.noise = noise

    def estimated_noise(self) -> float:
        return self.noise


def test_dds_data_weight_follows_the_noise_above_the_reference():
    """At or below ``reference_noise`` (in the prior's space) the weight is the fixed
    ``relative_gamma / ||A'||^2``; above it it falls as ``1 / noise^2``; 0 turns it off."""
    base, prior = _task(), _prior()
    record = METHODS["dds"]
    params = record.parameters("mri")
    norm = base.operator_norm() * record.prepare(base, params, prior, None)[1]["denoiser"].scale
    gammas = {}
    for factor in (0.5, 1.0, 4.0, 40.0):
        task = _NoisyTask(base.problem, factor * params.reference_noise * norm)
        gammas[factor] = record.prepare(task, params, prior, None)[1]["gamma"]
        fixed = record.prepare(task, record.parameters("mri", {"reference_noise": 0.0}),
                               prior, None)[1]["gamma"]
        assert fixed == pytest.approx(params.relative_gamma / norm**2, rel=1e-6)
    assert gammas[0.5] == pytest.approx(gammas[1.0], rel=1e-6)
    assert gammas[4.0] == pytest.approx(gammas[1.0] / 16, rel=1e-6)
    assert gammas[40.0] == pytest.approx(gammas[1.0] / 1600, rel=1e-6)
    assert noise_factor(0.1, 0.0) == 1.0 and noise_factor(0.0, 1e-3) == 1.0


def test_dds_schedule_ends_at_the_data_noise_when_asked():
    """``noise_sigma_min = c``: the last noise level is ``max(sigma_min, c nu)`` (``nu``
    the data's noise in the prior's space), below ``sigma_max``; the number of steps and
    the first level stay; ``c = 0`` keeps ``sigma_min`` at every noise."""
    base, prior = _task(), _prior()
    record = METHODS["dds"]
    plain = record.parameters("ct", {"noise_sigma_min": 0.0, "warm_start": 0.0})
    follows = record.parameters("ct", {"noise_sigma_min": 3.0, "warm_start": 0.0})
    norm = base.operator_norm() * record.prepare(base, plain, prior, None)[1]["denoiser"].scale
    for noise, end in ((1e-3, plain.sigma_min), (0.05, 0.15), (100.0, plain.sigma_max / 2)):
        task = _NoisyTask(base.problem, noise * norm)
        sigmas = record.prepare(task, follows, prior, None)[1]["sigmas"]
        assert float(sigmas[-1]) == pytest.approx(end, rel=1e-5)
        assert len(sigmas) == follows.steps
        assert float(sigmas[0]) == pytest.approx(follows.sigma_max, rel=1e-6)
        fixed = record.prepare(task, plain, prior, None)[1]["sigmas"]
        assert float(fixed[-1]) == pytest.approx(plain.sigma_min, rel=1e-6)


def test_rmpvi_data_weight_falls_to_bayes_rule_above_the_reference_noise():
    """``gamma`` up to ``reference_noise``, then ``1 + (gamma - 1) reference / nu``:
    towards Bayes' rule (1), never below it; ``reference_noise = 0`` keeps ``gamma``."""
    base, prior = _task(), _prior()
    record = METHODS["rmpvi"]
    params = record.parameters("ct", {"gamma": 3.0, "reference_noise": 0.01})
    fixed = record.parameters("ct", {"gamma": 3.0, "reference_noise": 0.0})
    norm = base.operator_norm() * record.prepare(base, params, prior, None)[1]["denoiser"].scale
    for noise, gamma in ((0.005, 3.0), (0.01, 3.0), (0.04, 1.5), (10.0, 1.002)):
        task = _NoisyTask(base.problem, noise * norm)
        assert record.prepare(task, params, prior, None)[1]["gamma"] == pytest.approx(
            gamma, rel=1e-6)
        assert record.prepare(task, fixed, prior, None)[1]["gamma"] == 3.0


@pytest.mark.parametrize("name", ["cgsense", "l1wavelet"])
def test_classical_weights_grow_with_the_noise(name):
    """``weight`` alone at no noise; ``noise_weight nu^2`` added (CG-SENSE: times
    ``||A||^2``; L1-wavelet: times ``||A||^2 q``), ``nu = sigma / (||A|| q)``."""
    from medrecon.operators.mri import CartesianMRI

    g = torch.Generator().manual_seed(0)
    A = CartesianMRI((16, 16), mask=(torch.arange(16) % 2 == 0).float())
    y = A(torch.randn(16, 16, generator=g, dtype=torch.complex64))
    base = MRITask(Problem(A, y), torch.zeros(16, 16), 1.0)
    record = METHODS[name]
    params = record.parameters("mri")
    quiet = record.prepare(_NoisyTask(base.problem, 0.0), params, None, None)[1]["weight"]
    task = _NoisyTask(base.problem, 0.05)
    noisy = record.prepare(task, params, None, None)[1]["weight"]
    norm, level = task.operator_norm(), task.image_level()
    nu = 0.05 / (norm * level)
    assert task.relative_noise() == pytest.approx(nu)
    added = params.noise_weight * nu**2 * norm**2 * (level if name == "l1wavelet" else 1.0)
    assert noisy == pytest.approx(quiet + added, rel=1e-6)
    off = record.prepare(task, record.parameters("mri", {"noise_weight": 0.0}), None, None)
    assert off[1]["weight"] == pytest.approx(quiet, rel=1e-6)


def test_dds_adaptation_is_handed_to_the_solver():
    adapt = pytest.importorskip("medrecon.solvers.adapt")
    task, prior = _task(), _prior()
    record = METHODS["dds"]
    assert record.parameters("mri").adapt is None
    assert "adapt" not in record.prepare(task, record.parameters("mri"), prior, None)[1]
    params = record.parameters("mri", {"adapt": {"steps": 2, "lr": 1e-4, "rank": 3,
                                                 "every": 5}})
    _, arguments = record.prepare(task, params, prior, None)
    assert arguments["adapt"] == adapt.Adaptation(steps=2, lr=1e-4, rank=3, every=5)
    # the record's defaults are the solver's (one set of defaults, stated twice only so that
    # reading a protocol does not import torch)
    assert record.parameters("mri", {"adapt": {}}).adapt.model_dump() == dataclasses.asdict(
        adapt.Adaptation())
    for bad in ({"steps": 0}, {"lr": 0.0}, {"rank": "4"}, {"every": 1, "other": 2}):
        with pytest.raises(ValidationError):
            record.parameters("mri", {"adapt": bad})


def test_rmpvi_and_dps_settings():
    task, prior = _task(), _prior()
    rmpvi = METHODS["rmpvi"]
    _, arguments = rmpvi.prepare(task, rmpvi.parameters("mri", {"steps": 4, "inner_iter": 2}),
                                 prior, None)
    assert arguments["zeta"] is None and arguments["inner_iter"] == 2
    assert len(arguments["sigmas"]) == 4 and arguments["x_init"].shape == (16,)
    # the CG data step (the solver's default) needs no operator norm; MRI takes 15 CG steps
    assert "operator_norm" not in arguments and "data_step" not in arguments
    assert (arguments["gamma"], arguments["cg_iter"]) == (2.0, 15)
    assert rmpvi.parameters("ct").cg_iter == 5
    dps = METHODS["dps"]
    _, arguments = dps.prepare(task, dps.parameters("mri", {"zeta": 0.3, "n_samples": 3}),
                               prior, None)
    assert arguments["zeta"] == 0.3 and arguments["n_samples"] == 3
    assert "operator_norm" not in arguments
    with pytest.raises(ValueError, match="needs a prior"):
        METHODS["dds"].run(task, METHODS["dds"].parameters("mri"))


@pytest.mark.parametrize("name", ["dds", "dps", "rmpvi"])
def test_a_second_run_with_the_same_parameters_is_the_same(name):
    """The old pipeline popped ``sigma_y`` from a shared parameter dict, so a second
    reconstruction with it silently took the noiseless form."""
    task, prior = _task(), _prior()
    record = METHODS[name]
    quick = {"dds": {"steps": 4}, "dps": {"steps": 4}, "rmpvi": {"steps": 3, "inner_iter": 2}}
    params = record.parameters("mri", quick[name])
    first, second = (record.run(task, params, prior=prior,
                                generator=torch.Generator().manual_seed(0)).image
                     for _ in range(2))
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_dds_study_twice_with_one_given_dict(tmp_path):
    """The same through the application: one ``given`` dict, two reconstructions of a
    noisy CT study; the dict is left as it was."""
    from medrecon.data.phantom import ct_phantom
    from medrecon.data.sinogram import write_sinogram
    from medrecon.data.sinogram_simulate import simulate_sinogram
    from medrecon.operators.ct_geometry import CTGeometry
    from medrecon.run import reconstruct_study
    from medrecon.studies import open_study

    phantom = ct_phantom(32, seed=1)
    geometry = CTGeometry.parallel((32, 32), 12, pixel_size=phantom.pixel_size)
    path = tmp_path / "s.h5"
    write_sinogram(simulate_sinogram(phantom.image, geometry, noise="poisson:1e4",
                                     generator=torch.Generator().manual_seed(0)), path)
    prior = GaussianPrior(torch.zeros(1, 32, 32), 1.0)
    prior.scale, prior.offset = 1000.0, -1000.0
    given = {"steps": 3, "relative_gamma": None}
    before = dict(given)
    with open_study(path, "ct") as study:
        results = [reconstruct_study(study, "dds", given, prior=prior,
                                     generator=torch.Generator().manual_seed(0))
                   for _ in range(2)]
    assert given == before
    assert (results[0].volume.array == results[1].volume.array).all()
    assert results[0].metrics == results[1].metrics
