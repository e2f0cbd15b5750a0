"""Regression tests, one per crash class fixed for issue 14 ("No crash on any input")."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from medrecon.data.sinogram import Sinogram, read_sinogram, write_sinogram
from medrecon.errors import InputError
from medrecon.operators.ct_geometry import CTGeometry


@pytest.fixture
def sino(tmp_path):
    g = CTGeometry.parallel((16, 16), 8)
    return write_sinogram(Sinogram(np.zeros((1, *g.sinogram_shape), np.float32), g, "HU"),
                          tmp_path / "s.h5")


def _edit(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)


def test_unicode_decode_error_non_utf8_attribute(sino):
    _edit(sino, lambda f: f.attrs.__setitem__("noise", np.bytes_(b"caf\xe9")))
    assert read_sinogram(sino).noise == "caf\ufffd"


def test_memory_error_huge_declared_sinogram(sino):
    def huge(f):
        del f["sinogram"]
        f.create_dataset("sinogram", shape=(1, 100000, 100000), dtype="f4", chunks=(1, 1, 16))
    _edit(sino, huge)
    with pytest.raises(InputError, match="sinogram"):
        read_sinogram(sino)


@pytest.mark.parametrize("kind", ["group", "softlink", "extlink"])
def test_key_error_broken_links_and_groups(sino, kind):
    def edit(f):
        del f["angles"]
        if kind == "group":
            f.create_group("angles")
        elif kind == "softlink":
            f["angles"] = h5py.SoftLink("/nowhere")
        else:
            f["angles"] = h5py.ExternalLink("missing.h5", "/x")
    _edit(sino, edit)
    with pytest.raises(InputError, match="angles"):
        read_sinogram(sino)


def test_zero_division_error_fan_zero_distance():
    with pytest.raises(ValueError, match="source_to_isocenter"):
        CTGeometry.fan((16, 16), 8, source_to_isocenter=0.0)


def test_zero_division_error_mu_to_hu_zero_mu_water(sino):
    _edit(sino, lambda f: f.attrs.__setitem__("mu_water", 0.0))
    with pytest.raises(InputError, match="mu_water"):
        read_sinogram(sino)


def test_hang_absurd_angle_count():
    with pytest.raises(ValueError, match="angles"):
        CTGeometry.parallel((16, 16), angles=np.zeros(10**6))


def test_zero_division_error_unet_norm_groups():
    from medrecon.priors.unet import UNetConfig

    with pytest.raises(ValueError, match="norm_groups"):
        UNetConfig(norm_groups=0)
    with pytest.raises(ValueError, match="channels"):
        UNetConfig(channels=(0, 16), attention_levels=(False, False))


def test_value_error_fan_fbp_on_unequal_views(tmp_path):
    """Found by test_generated_sinogram: a fan-beam sinogram whose angles are all zero,
    reconstructed with FBP, raised ``ValueError`` (a traceback) instead of one line."""
    from medrecon.studies import open_study

    g = CTGeometry.fan((16, 16), 8, source_to_isocenter=60.0, isocenter_to_detector=40.0)
    path = write_sinogram(Sinogram(np.zeros((1, *g.sinogram_shape), np.float32), g, "HU"),
                          tmp_path / "fan.h5")
    _edit(path, lambda f: f.__setitem__("angles", np.zeros(8)) if "angles" not in f
          else f["angles"].__setitem__(slice(None), np.zeros(8)))
    from medrecon.run import reconstruct_study

    with pytest.raises(InputError, match="angles|views"), open_study(path, "ct") as study:
        reconstruct_study(study, "fbp", {})


def test_a_corrupt_group_while_naming_the_other_kind_is_one_line(tmp_path, monkeypatch):
    """Fuzz find: a k-space file whose root group h5py cannot list ("number of children
    is greater than maximum") raised RuntimeError from the check for the other modality's
    dataset, after the reader had already refused the file."""
    import h5py

    from medrecon.studies import _other_kind

    class Broken:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def __contains__(self, name):
            raise RuntimeError("Unable to synchronously check link existence")

    path = tmp_path / "k.h5"
    path.write_bytes(b"")
    monkeypatch.setattr(h5py, "File", lambda *a, **k: Broken())
    assert _other_kind(path, "mri") is None
