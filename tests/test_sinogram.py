"""Sinogram files (HDF5 layout, NPY, TIFF) and simulation with noise."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile
import torch

from medrecon.data.sinogram import Sinogram, parse_noise, read_sinogram, write_sinogram
from medrecon.data.sinogram_simulate import simulate_sinogram
from medrecon.errors import InputError
from medrecon.operators.ct import CTProjector
from medrecon.operators.ct_geometry import CTGeometry

GEOMETRY = CTGeometry.fan((32, 32), 24, source_to_isocenter=200.0, isocenter_to_detector=100.0,
                          pixel_size=0.8)


def hu_image(size=32):
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    return np.where(xx**2 + yy**2 < (size / 2.5) ** 2, 40.0, -1000.0).astype(np.float32)


def test_hdf5_round_trip_keeps_geometry_and_reference(tmp_path):
    sino = simulate_sinogram(hu_image(), GEOMETRY)
    path = write_sinogram(sino, tmp_path / "s.h5")
    back = read_sinogram(path)
    assert back.geometry == GEOMETRY
    np.testing.assert_array_equal(back.data, sino.data)
    np.testing.assert_array_equal(back.reference, hu_image())
    assert back.image_units == "HU" and back.noise == "none"
    assert not list(tmp_path.glob(".*"))


def test_noiseless_simulation_is_the_projection_of_attenuation():
    sino = simulate_sinogram(hu_image(), GEOMETRY)
    mu = torch.tensor(sino.from_image_units(hu_image())).clamp_min(0)
    np.testing.assert_allclose(sino.data, CTProjector(GEOMETRY)(mu).numpy(), rtol=1e-6)
    np.testing.assert_allclose(sino.to_image_units(sino.from_image_units(hu_image())),
                               hu_image(), atol=1e-3)


def test_poisson_noise_has_the_photon_statistics():
    """Var(-log(N / I0)) ~ 1 / (I0 exp(-p)) by the delta method."""
    photons = 1e4
    clean = simulate_sinogram(hu_image(), GEOMETRY).data
    noisy = simulate_sinogram(hu_image(), GEOMETRY, noise=f"poisson:{photons:g}",
                              generator=torch.Generator().manual_seed(5)).data
    z = (noisy - clean) * np.sqrt(photons * np.exp(-clean))
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05


def test_gaussian_noise_level_and_seed():
    a = simulate_sinogram(hu_image(), GEOMETRY, noise="gaussian:0.1",
                          generator=torch.Generator().manual_seed(1))
    b = simulate_sinogram(hu_image(), GEOMETRY, noise="gaussian:0.1",
                          generator=torch.Generator().manual_seed(1))
    clean = simulate_sinogram(hu_image(), GEOMETRY)
    np.testing.assert_array_equal(a.data, b.data)
    assert abs(float((a.data - clean.data).std()) - 0.1) < 0.01


@pytest.mark.parametrize("spec", ["poisson", "poisson:-3", "gaussian:x", "laplace:1", "none:1"])
def test_bad_noise_specs(spec):
    with pytest.raises(ValueError, match="noise"):
        parse_noise(spec)


@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_array_files_need_and_use_a_geometry(tmp_path, suffix):
    data = simulate_sinogram(hu_image(), GEOMETRY).data
    path = tmp_path / f"s{suffix}"
    np.save(path, data) if suffix == ".npy" else tifffile.imwrite(path, data)
    with pytest.raises(InputError, match="geometry"):
        read_sinogram(path)
    np.testing.assert_array_equal(read_sinogram(path, GEOMETRY).data, data)
    wrong = GEOMETRY.with_angles(np.zeros(5))
    with pytest.raises(InputError, match="5 angles"):
        read_sinogram(path, wrong)


def _write_h5(path, sino, **edits):
    write_sinogram(sino, path)
    with h5py.File(path, "r+") as f:
        for key, value in edits.items():
            if key in f:
                del f[key]
            if value is not None:
                if key in ("sinogram", "angles", "reference"):
                    f[key] = value
                else:
                    f.attrs[key] = value
            elif key in f.attrs:
                del f.attrs[key]


@pytest.mark.parametrize(("edits", "message"), [
    ({"n_detectors": 7}, "n_detectors=7"),
    ({"sinogram": np.zeros((24, 5), np.float32)}, "detector columns"),
    ({"angles": np.zeros(3)}, "3 angles"),
    ({"sinogram": np.full((24, 49), np.nan, np.float32)}, "NaN"),
    ({"beam": "helical"}, "beam"),
    ({"source_to_isocenter": None}, "source_to_isocenter"),
    ({"image_units": "furlongs"}, "image_units"),
    ({"reference": np.zeros((5, 5), np.float32)}, "reference"),
])
def test_bad_hdf5_files_name_the_field(tmp_path, edits, message):
    sino = simulate_sinogram(hu_image(), GEOMETRY)
    assert sino.data.shape == (24, 49)
    path = tmp_path / "bad.h5"
    _write_h5(path, sino, **edits)
    with pytest.raises(InputError, match=message) as info:
        read_sinogram(path)
    assert str(path) in str(info.value)


def test_not_hdf5_and_missing_files(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(InputError, match="HDF5"):
        read_sinogram(bad)
    with pytest.raises(InputError, match="no such file"):
        read_sinogram(tmp_path / "missing.h5")
    with pytest.raises(InputError, match="format"):
        read_sinogram(bad.with_suffix(".txt").write_text("x") and bad.with_suffix(".txt"))


def test_write_to_missing_folder_writes_nothing(tmp_path):
    sino = Sinogram(np.zeros(GEOMETRY.sinogram_shape, np.float32), GEOMETRY)
    with pytest.raises(InputError, match="does not exist"):
        write_sinogram(sino, tmp_path / "nope" / "s.h5")
    assert list(tmp_path.iterdir()) == []


def test_old_import_of_simulate_sinogram_still_works():
    from medrecon.data import sinogram, sinogram_simulate

    assert sinogram.simulate_sinogram is sinogram_simulate.simulate_sinogram
    with pytest.raises(AttributeError):
        sinogram.no_such_name  # noqa: B018
