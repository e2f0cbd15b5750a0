"""Property-based tests of the bad-input contract (issue 14, "No crash on any input").

Hypothesis generates and mutates tiny valid files (16 x 16 sinograms, 16 x 16 k-space,
8 x 8 NIfTI, protocol YAML, prior checkpoints) and runs the command line in-process
(:func:`medrecon.cli.main`). Whatever the file holds, the command

- exits with 0 or 2 (``EXIT_BAD_INPUT``);
- on error prints exactly one line on standard error, ``medrecon: error: ...``,
  naming the file;
- never prints a traceback (stdout, stderr or logs);
- leaves no output behind on error;
- leaves the input bytes unchanged;
- finishes within :data:`TIME_BOUND` seconds.

The default run tries a few hundred examples per kind of edit and format
(:data:`DEFAULT`: 250; 150 for the structural checkpoint edits, which pickle a whole
checkpoint each), about 2,000 in all, in-process; ``pytest -m slow
tests/test_fuzz_inputs.py`` runs 2,000 per test (:data:`SLOW`). Examples are
derandomised, so the default run is the same on every machine. A few examples also run
as the real command in a subprocess (:func:`test_the_real_command_on_corrupt_files`),
where a native library writing to the process's own standard error, or crashing it,
shows; ``medrecon run`` over a folder of them checks the per-study contract of a run.
"""

from __future__ import annotations

import io
import logging
import math
import shutil
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from medrecon.cli import EXIT_BAD_INPUT, main

TIME_BOUND = 20.0  # seconds per example
DEFAULT = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                   suppress_health_check=list(HealthCheck))
"""The default run: a few hundred examples per test, the same on every machine."""
SLOW = settings(DEFAULT, max_examples=2000)
"""``-m slow``: thousands."""

#: crashes that the properties find and whose fix is pending outside the readers (issue
#: 14), as (exception type, start of its message): such an example is rejected, not
#: failed. Each needs a strict xfail in tests/test_bad_input_regressions.py, which fails
#: once it is fixed, so that its entry here goes too. None at present.
KNOWN_CRASHES: list[tuple[type[BaseException], str]] = []


def known_crash(exc: BaseException) -> bool:
    return any(isinstance(exc, kind) and str(exc).startswith(start)
               for kind, start in KNOWN_CRASHES)


# ------------------------------------------------------------------------ the contract
def run_contract(argv: list[str], inputs: list[Path], outputs: list[Path]) -> tuple[int, str]:
    """Run ``medrecon ARGV`` in-process and assert the bad-input contract; returns
    ``(status, stderr)``."""
    before = {p: p.read_bytes() for p in inputs}
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []  # as in a fresh process: the command's basicConfig logs to `err`
    start = time.monotonic()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            status = main(argv)
    except Exception as exc:
        if known_crash(exc):
            reject()  # tracked in test_bad_input_regressions.py
        raise
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers, root.level = handlers, level
    elapsed = time.monotonic() - start
    stdout, stderr = out.getvalue(), err.getvalue()
    shown = f"argv={argv}\nstdout={stdout!r}\nstderr={stderr!r}"
    assert status in (0, EXIT_BAD_INPUT), shown
    assert "Traceback" not in stdout + stderr, shown
    assert elapsed < TIME_BOUND, f"{elapsed:.1f} s\n{shown}"
    for path, data in before.items():
        assert path.read_bytes() == data, f"input {path} changed\n{shown}"
    if status != 0:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1, shown
        assert lines[0].startswith("medrecon: error: "), shown
        names = [p.name for p in inputs]
        assert any(name in lines[0] for name in names), shown
        for path in outputs:
            assert not path.exists(), f"partial output {path}\n{shown}"
        leftovers = [p.name for p in outputs[0].parent.iterdir()
                     if p not in inputs] if outputs else []
        assert not leftovers, f"left behind {leftovers}\n{shown}"
    return status, stderr


# ------------------------------------------------------------------------ seeds
class Seeds(dict):
    """The seed files' bytes by kind (a short repr keeps Hypothesis reports readable)."""

    def __repr__(self) -> str:
        return f"Seeds({sorted(self)})"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Seeds:
    """Valid tiny files of each format, as bytes."""
    import torch

    from medrecon.data.kspace_write import write_kspace_file
    from medrecon.data.nifti import write_nifti
    from medrecon.data.sinogram import Sinogram, write_sinogram
    from medrecon.data.volume import Volume
    from medrecon.operators.ct_geometry import CTGeometry
    from medrecon.priors.checkpoint import Checkpoint, prior_metadata, save_checkpoint
    from medrecon.priors.unet import UNetBackbone, UNetConfig

    folder = tmp_path_factory.mktemp("seeds")
    rng = np.random.default_rng(0)
    result = Seeds()
    for beam in ("parallel", "fan"):
        geometry = (CTGeometry.parallel((16, 16), 8, pixel_size=1.0) if beam == "parallel"
                    else CTGeometry.fan((16, 16), 8, source_to_isocenter=60.0,
                                        isocenter_to_detector=40.0))
        data = rng.uniform(0, 0.5, (1, *geometry.sinogram_shape)).astype(np.float32)
        reference = rng.uniform(-1000, 500, (1, 16, 16)).astype(np.float32)
        path = write_sinogram(Sinogram(data, geometry, "HU", 0.0192, reference, "none"),
                              folder / f"{beam}.h5")
        result[beam] = path.read_bytes()
    kspace = (rng.standard_normal((1, 2, 16, 16)) + 1j * rng.standard_normal((1, 2, 16, 16)))
    mask = np.ones(16, dtype=bool)
    mask[::3] = True
    path = write_kspace_file(folder / "kspace.h5", kspace.astype(np.complex64), mask=mask,
                             reference=np.abs(rng.standard_normal((1, 16, 16))),
                             attrs={"acceleration": 1.0, "pattern": "random"})
    result["kspace"] = path.read_bytes()
    volume = Volume(rng.uniform(-1000, 1000, (2, 8, 8)).astype(np.float32), (2.0, 1.0, 1.0),
                    modality="CT", units="HU")
    result["nifti"] = write_nifti(volume, folder / "image.nii").read_bytes()
    result["nifti.gz"] = write_nifti(volume, folder / "image.nii.gz").read_bytes()
    config = UNetConfig(in_channels=1, channels=(8, 8), attention_levels=(False, False),
                        norm_groups=4, head_channels=8)
    net = UNetBackbone(config)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    metadata = prior_metadata(modality="ct", scale=1000.0, offset=0.0, units="HU",
                              method="HU/1000", image_size=(16, 16), sigma_data=0.5,
                              architecture=config, recipe={"steps": 1})
    path = save_checkpoint(Checkpoint(metadata, state, state, None, 1, [0.1],
                                      torch.zeros(8, dtype=torch.uint8)), folder / "prior.pt")
    result["checkpoint"] = path.read_bytes()
    result["protocol"] = (Path(__file__).parents[1] / "protocols" /
                          "ct-sparse-fbp.yaml").read_bytes()
    return result


# ------------------------------------------------------------------------ mutations
@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` with a few random byte edits: overwrite, flip, special words, delete,
    insert, truncate."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        if not b:
            break
        i = draw(st.integers(0, len(b) - 1))
        kind = draw(st.sampled_from(["set", "flip", "word", "delete", "insert", "truncate"]))
        if kind == "set":
            b[i] = draw(st.integers(0, 255))
        elif kind == "flip":
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "word":
            word = draw(st.sampled_from([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x00",
                                         b"\xff\xff\xff\xff", b"\x00\x00\x80\x7f",
                                         b"\x00\x00\xc0\x7f", b"\x01\x00\x00\x00"]))
            b[i:i + len(word)] = word
        elif kind == "delete":
            del b[i:i + draw(st.integers(1, 64))]
        elif kind == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            del b[i:]
    return bytes(b)


# ------------------------------------------------------------------------ sinograms
def _sinogram_case(seeds, tmp_path, data, command):
    beam = data.draw(st.sampled_from(["parallel", "fan"]), label="beam")
    folder = tmp_path / "case"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    sino = folder / "in.h5"
    sino.write_bytes(data.draw(mutated(seeds[beam]), label="bytes"))
    out = folder / "out.nii.gz"
    argv = (["info", str(sino)] if command == "info"
            else ["recon", "ct", str(sino), "--method", "fbp", "-o", str(out)])
    run_contract(argv, [sino], [out])


@DEFAULT
@given(data=st.data(), command=st.sampled_from(["info", "recon"]))
def test_mutated_sinogram(seeds, tmp_path, data, command):
    _sinogram_case(seeds, tmp_path, data, command)


@pytest.mark.slow
@SLOW
@given(data=st.data(), command=st.sampled_from(["info", "recon"]))
def test_mutated_sinogram_many(seeds, tmp_path, data, command):
    _sinogram_case(seeds, tmp_path, data, command)


#: values an attribute may be given: wrong types, odd encodings, edge numbers
ODD_VALUES = st.one_of(
    st.sampled_from([0, -1, 1, 2**31, 2**62, 0.0, -0.0, -1.0, 1e-300, 1e300, math.nan,
                     math.inf, -math.inf, "", "fan", "parallel", "HU", "1/mm", True]),
    st.binary(max_size=8).map(np.bytes_),
    st.text(max_size=8),
    st.lists(st.integers(-3, 100000), min_size=0, max_size=3).map(np.array),
)
SINOGRAM_ATTRS = ["beam", "image_shape", "pixel_size", "n_detectors", "detector_spacing",
                  "source_to_isocenter", "isocenter_to_detector", "image_units", "mu_water",
                  "noise", "format", "format_version"]


@st.composite
def sinogram_edits(draw):
    """Structural edits of a sinogram file: attributes set to odd values or deleted,
    datasets replaced by groups, broken or external links, huge declared shapes,
    other dtypes and shapes."""
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["attr", "delattr", "group", "softlink", "extlink",
                                     "huge", "dtype", "shape", "angles"]))
        target = draw(st.sampled_from(["sinogram", "angles", "reference"]))
        if kind == "attr":
            edits.append(("attr", draw(st.sampled_from(SINOGRAM_ATTRS)), draw(ODD_VALUES)))
        elif kind == "delattr":
            edits.append(("delattr", draw(st.sampled_from(SINOGRAM_ATTRS)), None))
        elif kind == "huge":
            edits.append(("huge", target, draw(st.sampled_from(
                [(1, 100000, 100000), (100000, 100000), (2**40,), (1, 8, 2**31)]))))
        elif kind == "dtype":
            edits.append(("dtype", target, draw(st.sampled_from(
                ["complex64", "S4", "int8", "bool", "float16"]))))
        elif kind == "shape":
            edits.append(("shape", target, draw(st.sampled_from(
                [(0,), (8,), (8, 26, 1, 1), (0, 16, 16), (3, 8, 26)]))))
        elif kind == "angles":
            edits.append(("angles", "angles", draw(st.sampled_from(
                ["zeros", "nan", "huge values", "100000 views"]))))
        else:
            edits.append((kind, target, None))
    return edits


def apply_edits(path: Path, edits) -> None:
    with h5py.File(path, "a") as f:
        for kind, name, value in edits:
            if kind == "attr":
                f.attrs[name] = value
            elif kind == "delattr":
                if name in f.attrs:
                    del f.attrs[name]
            else:
                if name in f or name in f.attrs:
                    del f[name]
                if kind == "group":
                    f.create_group(name)
                elif kind == "softlink":
                    f[name] = h5py.SoftLink("/nowhere")
                elif kind == "extlink":
                    f[name] = h5py.ExternalLink("missing.h5", "/data")
                elif kind == "huge":
                    f.create_dataset(name, shape=value, dtype="f4",
                                     chunks=(1,) * (len(value) - 1) + (16,))
                elif kind == "dtype":
                    f.create_dataset(name, shape=(1, 8, 26), dtype=value)
                elif kind == "shape":
                    f.create_dataset(name, shape=value, dtype="f4")
                else:
                    f.create_dataset(name, data={
                        "zeros": np.zeros(8), "nan": np.full(8, np.nan),
                        "huge values": np.full(8, 1e30),
                        "100000 views": np.arange(100000.0)}[value])


def _sinogram_edit_case(seeds, tmp_path, beam, edits, command):
    folder = tmp_path / "case"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    sino = folder / "in.h5"
    sino.write_bytes(seeds[beam])
    apply_edits(sino, edits)
    out = folder / "out.nii.gz"
    argv = (["info", str(sino)] if command == "info"
            else ["recon", "ct", str(sino), "--method", "fbp", "-o", str(out)])
    run_contract(argv, [sino], [out])


@DEFAULT
@given(beam=st.sampled_from(["parallel", "fan"]), edits=sinogram_edits(),
       command=st.sampled_from(["info", "recon"]))
def test_generated_sinogram(seeds, tmp_path, beam, edits, command):
    _sinogram_edit_case(seeds, tmp_path, beam, edits, command)


@pytest.mark.slow
@SLOW
@given(beam=st.sampled_from(["parallel", "fan"]), edits=sinogram_edits(),
       command=st.sampled_from(["info", "recon"]))
def test_generated_sinogram_many(seeds, tmp_path, beam, edits, command):
    _sinogram_edit_case(seeds, tmp_path, beam, edits, command)


# ------------------------------------------------------------------------ k-space
def _kspace_case(seeds, tmp_path, content: bytes, command):
    folder = tmp_path / "case"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    kspace = folder / "in.h5"
    kspace.write_bytes(content)
    out = folder / "out.h5"
    argv = (["info", str(kspace)] if command == "info"
            else ["recon", "mri", str(kspace), "--method", "zf", "-o", str(out)])
    run_contract(argv, [kspace], [out])


@DEFAULT
@given(data=st.data(), command=st.sampled_from(["info", "recon"]))
def test_mutated_kspace(seeds, tmp_path, data, command):
    _kspace_case(seeds, tmp_path, data.draw(mutated(seeds["kspace"])), command)


@pytest.mark.slow
@SLOW
@given(data=st.data(), command=st.sampled_from(["info", "recon"]))
def test_mutated_kspace_many(seeds, tmp_path, data, command):
    _kspace_case(seeds, tmp_path, data.draw(mutated(seeds["kspace"])), command)


@st.composite
def kspace_edits(draw):
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["attr", "group", "softlink", "extlink", "huge", "dtype",
                                     "shape", "header"]))
        target = draw(st.sampled_from(["kspace", "mask", "reconstruction_rss",
                                       "ismrmrd_header", "trajectory"]))
        if kind == "attr":
            edits.append(("attr", draw(st.sampled_from(["acceleration", "pattern", "max",
                                                         "patient_id"])), draw(ODD_VALUES)))
        elif kind == "huge":
            edits.append(("huge", target, draw(st.sampled_from(
                [(4, 100000, 100000), (1, 2, 100000, 100000), (2**20, 2, 16, 16),
                 (1, 100000, 16)]))))
        elif kind == "dtype":
            edits.append(("dtype", target, draw(st.sampled_from(
                ["complex128", "float32", "S4", "int8", "bool"]))))
        elif kind == "shape":
            edits.append(("shape", target, draw(st.sampled_from(
                [(0,), (16,), (1, 2, 16, 16, 1), (0, 2, 16, 16), (1, 2, 16), (2, 16)]))))
        elif kind == "header":
            edits.append(("header", "ismrmrd_header", draw(st.sampled_from([
                b"<ismrmrdHeader/>", b"\xff\xfe<x>", b"<a>" * 1000,
                b"<ismrmrdHeader><encoding><encodedSpace><matrixSize><x>99999999</x><y>1"
                b"</y><z>1</z></matrixSize></encodedSpace></encoding></ismrmrdHeader>"]))))
        else:
            edits.append((kind, target, None))
    return edits


def apply_kspace_edits(path: Path, edits) -> None:
    with h5py.File(path, "a") as f:
        for kind, name, value in edits:
            if kind == "attr":
                f.attrs[name] = value
                continue
            if name in f:
                del f[name]
            if kind == "group":
                f.create_group(name)
            elif kind == "softlink":
                f[name] = h5py.SoftLink("/nowhere")
            elif kind == "extlink":
                f[name] = h5py.ExternalLink("missing.h5", "/data")
            elif kind == "huge":
                f.create_dataset(name, shape=value, dtype="c8",
                                 chunks=(1,) * (len(value) - 1) + (16,))
            elif kind == "dtype":
                f.create_dataset(name, shape=(1, 2, 16, 16), dtype=value)
            elif kind == "shape":
                f.create_dataset(name, shape=value, dtype="c8" if name == "kspace" else "f4")
            else:
                f.create_dataset(name, data=np.void(value) if value.startswith(b"\xff")
                                 else value)


def _kspace_edit_case(seeds, tmp_path, edits, command):
    folder = tmp_path / "edit"
    folder.mkdir(exist_ok=True)
    source = folder / "seed.h5"
    source.write_bytes(seeds["kspace"])
    apply_kspace_edits(source, edits)
    _kspace_case(seeds, tmp_path, source.read_bytes(), command)


@DEFAULT
@given(edits=kspace_edits(), command=st.sampled_from(["info", "recon"]))
def test_generated_kspace(seeds, tmp_path, edits, command):
    _kspace_edit_case(seeds, tmp_path, edits, command)


@pytest.mark.slow
@SLOW
@given(edits=kspace_edits(), command=st.sampled_from(["info", "recon"]))
def test_generated_kspace_many(seeds, tmp_path, edits, command):
    _kspace_edit_case(seeds, tmp_path, edits, command)


# ------------------------------------------------------------------------ NIfTI
def _nifti_case(seeds, tmp_path, data, command):
    kind = data.draw(st.sampled_from(["nifti", "nifti.gz"]), label="kind")
    folder = tmp_path / "case"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    image = folder / ("in.nii.gz" if kind == "nifti.gz" else "in.nii")
    content = seeds[kind]
    if kind == "nifti.gz" and data.draw(st.booleans(), label="inside"):
        import gzip

        content = gzip.compress(data.draw(mutated(gzip.decompress(content))), mtime=0)
    else:
        content = data.draw(mutated(content), label="bytes")
    image.write_bytes(content)
    out = folder / "out.h5"
    argv = (["info", str(image)] if command == "info"
            else ["simulate", "ct", str(image), "--views", "4", "-o", str(out)])
    run_contract(argv, [image], [out])


@DEFAULT
@given(data=st.data(), command=st.sampled_from(["info", "simulate"]))
def test_mutated_nifti(seeds, tmp_path, data, command):
    _nifti_case(seeds, tmp_path, data, command)


@pytest.mark.slow
@SLOW
@given(data=st.data(), command=st.sampled_from(["info", "simulate"]))
def test_mutated_nifti_many(seeds, tmp_path, data, command):
    _nifti_case(seeds, tmp_path, data, command)


# ------------------------------------------------------------------------ protocols
def _protocol_case(tmp_path, text: bytes):
    folder = tmp_path / "case"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    protocol = folder / "site.yaml"
    protocol.write_bytes(text)
    run_contract(["protocols", "validate", str(protocol)], [protocol], [])


@DEFAULT
@given(data=st.data())
def test_mutated_protocol(seeds, tmp_path, data):
    _protocol_case(tmp_path, data.draw(mutated(seeds["protocol"])))


#: YAML fragments that a protocol field may be replaced with
YAML_VALUES = st.sampled_from([
    "null", "~", "[]", "{}", "0", "-1", "1e999", ".nan", ".inf", "true", "'x'", "\"\\xff\"",
    "!!binary AAAA", "&a [*a]", "[" * 30 + "]" * 30, "{a: " * 30 + "1" + "}" * 30,
    "!!python/object:os.system x", "\x00", "\t", "|\n  x", "2001-12-14", "0x10", "'\u00e9'",
])


def _protocol_edit_case(seeds, tmp_path, data):
    lines = seeds["protocol"].decode().splitlines()
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(lines) - 1))
        key = lines[index].split(":")[0] if ":" in lines[index] else "x"
        lines[index] = f"{key}: {data.draw(YAML_VALUES)}"
    _protocol_case(tmp_path, "\n".join(lines).encode("utf-8", "surrogateescape"))


@DEFAULT
@given(data=st.data())
def test_generated_protocol(seeds, tmp_path, data):
    _protocol_edit_case(seeds, tmp_path, data)


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_generated_protocol_many(seeds, tmp_path, data):
    _protocol_edit_case(seeds, tmp_path, data)


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_mutated_protocol_many(seeds, tmp_path, data):
    _protocol_case(tmp_path, data.draw(mutated(seeds["protocol"])))


# ------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def ct_seed_sinogram(seeds, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sino") / "scan.h5"
    path.write_bytes(seeds["parallel"])
    return path


def _checkpoint_case(tmp_path, sinogram: Path, content: bytes):
    folder = tmp_path / "case"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    prior = folder / "prior.pt"
    prior.write_bytes(content)
    out = folder / "out.nii.gz"
    run_contract(["recon", "ct", str(sinogram), "--method", "dds", "--prior", str(prior),
                  "--steps", "2", "-o", str(out)], [prior, sinogram], [out])


@DEFAULT
@given(data=st.data())
def test_mutated_checkpoint(seeds, ct_seed_sinogram, tmp_path, data):
    _checkpoint_case(tmp_path, ct_seed_sinogram, data.draw(mutated(seeds["checkpoint"])))


#: checkpoint record edits: (path of keys, new value)
RECORD_VALUES = st.one_of(
    st.sampled_from([None, 0, -1, 2**40, 0.0, math.nan, math.inf, "", "x", "ct", "mri",
                     "edm", True, [], {}, [0], [1, 2, 3], [8, 0], [2**20], (8,), [-8, 8]]),
    st.lists(st.integers(-2, 2**12), max_size=4),
    st.dictionaries(st.sampled_from(["scale", "offset", "x"]), st.floats(allow_nan=True),
                    max_size=3),
)
RECORD_PATHS = st.sampled_from([
    ("format",), ("format_version",), ("metadata",), ("weights",), ("ema",), ("step",),
    ("losses",), ("rng",), ("optimizer",), ("metadata", "modality"), ("metadata", "layout"),
    ("metadata", "normalisation"), ("metadata", "normalisation", "scale"),
    ("metadata", "image_size"), ("metadata", "sigma_data"), ("metadata", "parametrisation"),
    ("metadata", "architecture"), ("metadata", "architecture", "channels"),
    ("metadata", "architecture", "attention_levels"),
    ("metadata", "architecture", "norm_groups"), ("metadata", "architecture", "head_channels"),
    ("metadata", "architecture", "res_blocks"), ("metadata", "architecture", "in_channels"),
    ("metadata", "architecture", "timestep_scale"), ("metadata", "architecture", "extra"),
])


CHECKPOINT_EDITS = st.lists(st.tuples(RECORD_PATHS, RECORD_VALUES, st.booleans()), min_size=1,
                            max_size=3)


@settings(DEFAULT, max_examples=150)
@given(edits=CHECKPOINT_EDITS)
def test_generated_checkpoint(seeds, ct_seed_sinogram, tmp_path, edits):
    _checkpoint_edit_case(seeds, ct_seed_sinogram, tmp_path, edits)


@pytest.mark.slow
@SLOW
@given(edits=CHECKPOINT_EDITS)
def test_generated_checkpoint_many(seeds, ct_seed_sinogram, tmp_path, edits):
    _checkpoint_edit_case(seeds, ct_seed_sinogram, tmp_path, edits)


def _checkpoint_edit_case(seeds, ct_seed_sinogram, tmp_path, edits):
    import torch

    source = tmp_path / "seed.pt"
    source.write_bytes(seeds["checkpoint"])
    record = torch.load(source, weights_only=True)
    for keys, value, delete in edits:
        node = record
        for key in keys[:-1]:
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            if isinstance(node, dict):
                if delete:
                    node.pop(keys[-1], None)
                else:
                    node[keys[-1]] = value
    torch.save(record, source)
    _checkpoint_case(tmp_path, ct_seed_sinogram, source.read_bytes())


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_mutated_checkpoint_many(seeds, ct_seed_sinogram, tmp_path, data):
    _checkpoint_case(tmp_path, ct_seed_sinogram, data.draw(mutated(seeds["checkpoint"])))


# ------------------------------------------------------------------------ the seeds work
@pytest.mark.parametrize("kind", ["parallel", "fan", "kspace", "nifti", "checkpoint",
                                  "protocol"])
def test_seeds_are_valid(seeds, ct_seed_sinogram, tmp_path, kind):
    """Each unmutated seed passes (status 0), so mutations start from valid files."""
    suffix = {"kspace": ".h5", "nifti": ".nii", "checkpoint": ".pt",
              "protocol": ".yaml"}.get(kind, ".h5")
    path = tmp_path / f"seed{suffix}"
    path.write_bytes(seeds[kind])
    out = tmp_path / "out.nii.gz"
    argv = {"parallel": ["recon", "ct", str(path), "--method", "fbp", "-o", str(out)],
            "fan": ["recon", "ct", str(path), "--method", "fbp", "-o", str(out)],
            "kspace": ["recon", "mri", str(path), "--method", "zf", "-o", str(out)],
            "nifti": ["info", str(path)],
            "checkpoint": ["recon", "ct", str(ct_seed_sinogram), "--method", "dds", "--prior",
                           str(path), "--steps", "2", "-o", str(out)],
            "protocol": ["protocols", "validate", str(path)]}[kind]
    status, stderr = run_contract(argv, [path], [])
    assert status == 0, stderr


# ------------------------------------------------------------------------ the real command
def _corrupt(data: bytes, rng: np.random.Generator) -> bytes:
    """``data`` with a few random bytes overwritten and, sometimes, truncated."""
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 8))):
        b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
    if rng.random() < 0.3:
        del b[int(rng.integers(len(b) // 4, len(b))):]
    return bytes(b)


def _command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "medrecon.cli", *args], cwd=cwd,
                            capture_output=True, text=True, timeout=10 * TIME_BOUND)
    assert time.monotonic() - start < 10 * TIME_BOUND
    shown = f"{args}\nstdout={result.stdout!r}\nstderr={result.stderr!r}"
    assert "Traceback" not in result.stdout + result.stderr, shown
    assert "HDF5-DIAG" not in result.stderr, shown  # the C library's own error stack
    return result


def test_the_real_command_on_corrupt_files(seeds, tmp_path):
    """``medrecon run`` (a real process, each study opened first in a child) over a folder
    of corrupt sinograms and one good one: every study gets one line (done, or FAILED
    naming its file), the run ends with 0 or 1, the inputs are unchanged and only the
    good studies' outputs and the summary are left; ``recon mri`` on a corrupt k-space
    file obeys the command's contract."""
    rng = np.random.default_rng(14)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.h5").write_bytes(seeds["parallel"])
    for k in range(8):
        beam = ("parallel", "fan")[k % 2]
        (folder / f"bad{k}.h5").write_bytes(_corrupt(seeds[beam], rng))
    before = {p: p.read_bytes() for p in folder.iterdir()}
    out = tmp_path / "out"
    result = _command("run", "ct-sparse-fbp", str(folder), "-o", str(out), cwd=tmp_path)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert {p: p.read_bytes() for p in folder.iterdir()} == before
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == len(before), result.stdout
    done = set()
    for line in lines:
        name = line.split("] ", 1)[1].split(":", 1)[0]
        if ": FAILED: " in line:
            assert str(folder / f"{name}.h5") in line, line
        else:
            assert ": done in " in line, line
            done.add(name)
    assert "good" in done
    expected = {"run_summary.json", *(f"{n}_fbp{x}" for n in done
                                      for x in (".json", ".nii.gz", ".png"))}
    assert {p.name for p in out.iterdir()} == expected  # no staging, claims or partials
    kspace = tmp_path / "k.h5"
    kspace.write_bytes(_corrupt(seeds["kspace"], rng))
    data = kspace.read_bytes()
    recon = tmp_path / "k_out.h5"
    result = _command("recon", "mri", str(kspace), "--method", "zf", "-o", str(recon),
                      cwd=tmp_path)
    assert result.returncode in (0, EXIT_BAD_INPUT), result.stderr
    assert kspace.read_bytes() == data
    if result.returncode:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("medrecon: error: "), result.stderr
        assert kspace.name in lines[0] and not recon.exists()
