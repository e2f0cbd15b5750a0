"""Site protocols: shipped ones, errors naming file/key/line, extends, overrides, priors, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from medrecon.cli import EXIT_BAD_INPUT, main
from medrecon.errors import InputError
from medrecon.methods import METHODS
from medrecon.protocol import (
    Protocol,
    apply_overrides,
    load_protocol,
    prior_reference,
    protocol_json_schema,
    protocol_yaml,
    shipped_protocols,
)

SHIPPED = ["ct-sparse-dds", "ct-sparse-fbp", "ct-sparse-rmpvi", "ct-sparse-tv",
           "mri-cartesian-cgsense", "mri-cartesian-dds", "mri-cartesian-l1wavelet",
           "mri-cartesian-rmpvi", "mri-radial-dps"]

# A small valid protocol; the line numbers matter to the error tests below.
SITE = """\
version: 1
modality: ct
solver:
  name: tv
  params:
    iterations: 20
outputs:
  formats: [nifti, hdf5]
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def edit(text: str, line: int, new: str | None) -> str:
    """``text`` with 1-based ``line`` replaced by ``new`` (removed when None)."""
    lines = text.splitlines()
    lines[line - 1:line] = [] if new is None else new.splitlines()
    return "\n".join(lines) + "\n"


def error_of(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(InputError) as info:
        load_protocol(path, overrides)
    return str(info.value)


# -- shipped protocols ------------------------------------------------------------------
def test_every_protocol_is_shipped():
    assert shipped_protocols() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_protocol_round_trips(name, tmp_path):
    protocol = load_protocol(name)
    assert protocol.name == name and protocol.description
    assert protocol.source is not None and protocol.source.name == f"{name}.yaml"
    text = protocol_yaml(protocol)
    assert f"# sha256: {protocol.hash}" in text
    again = load_protocol(write(tmp_path, "copy.yaml", text))
    assert again.hash == protocol.hash and again.to_dict() == protocol.to_dict()
    assert again.model_copy() == again != protocol  # equal data, another source
    assert load_protocol(protocol.source) == protocol


def test_shipped_protocols_hold_their_settings():
    tv, dds = load_protocol("ct-sparse-tv"), load_protocol("ct-sparse-dds")
    assert tv.acquisition.geometry == "parallel" and tv.acquisition.views is None
    assert tv.input.kind == "sinogram" and tv.input.pattern == "*.h5"
    assert tv.solver.params == {"iterations": None, "weight": None}
    assert prior_reference(tv) is None and tv.prior == "default"
    # ct-sparse-dds extends ct-sparse-tv: the tv parameters are not inherited by dds
    assert dds.acquisition == tv.acquisition and dds.solver.name == "dds"
    assert dds.solver.params["steps"] is None and dds.solver.params["sigma_max"] is None
    assert set(dds.solver.params) == set(METHODS["dds"].params.model_fields)
    assert prior_reference(dds) == "default"
    rmpvi = load_protocol("mri-cartesian-rmpvi").solver.params
    assert (rmpvi["steps"], rmpvi["inner_iter"]) == (None, None)  # the runner's defaults
    dps = load_protocol("mri-radial-dps")
    assert dps.acquisition.trajectory == "radial" and dps.input.kind == "kspace"
    assert dps.solver.params["n_samples"] == 4 and dps.solver.params["steps"] is None
    for name in SHIPPED:
        protocol = load_protocol(name)
        assert protocol.modality in METHODS[protocol.solver.name].modalities


def test_protocol_is_frozen_and_defaults_filled(tmp_path):
    protocol = load_protocol(write(tmp_path, "site.yaml", SITE))
    before = protocol.hash
    with pytest.raises(ValidationError, match="frozen"):
        protocol.seed = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        protocol.solver.name = "fbp"  # type: ignore[misc]
    with pytest.raises(TypeError):
        protocol.solver.params["iterations"] = 5  # type: ignore[index]
    with pytest.raises(AttributeError):
        protocol.outputs.formats.append("npy")  # type: ignore[attr-defined]
    protocol.to_dict()["solver"]["params"]["iterations"] = 5  # a copy
    assert protocol.hash == before and protocol.solver.params["iterations"] == 20
    assert protocol.to_dict() == {
        "version": 1, "name": "site", "description": "", "modality": "ct",
        "input": {"kind": "sinogram", "pattern": "*.h5"},
        "acquisition": {"geometry": None, "views": None}, "prior": "default",
        "solver": {"name": "tv", "params": {"iterations": 20, "weight": None}},
        "device": "cpu", "seed": 0,
        "outputs": {"formats": ["nifti", "hdf5"], "naming": "{study}", "figure": True,
                    "report": True}}
    assert protocol.outputs.formats == ("nifti", "hdf5")
    assert protocol.outputs.stem("knee01", "tv") == "knee01"


# -- errors name the file, the key and its line -----------------------------------------
@pytest.mark.parametrize("text,where,problem", [
    (edit(SITE, 6, "    iters: 20"), "solver.params.iters (line 6)",
     "unknown key for tv; expected one of iterations, weight"),
    (edit(SITE, 2, "modality: ct\ncolour: red"), "colour (line 3)", "unknown key"),
    (edit(SITE, 6, "    iterations: many"), "solver.params.iterations (line 6)",
     "expected an integer >= 1, got str 'many'"),
    (edit(SITE, 6, "    iterations: true"), "solver.params.iterations (line 6)", "got bool true"),
    (edit(SITE, 6, "    iterations: 2.5"), "solver.params.iterations (line 6)", "got float 2.5"),
    (edit(SITE, 6, "    iterations: 0"), "solver.params.iterations (line 6)", "must be >= 1"),
    (edit(SITE, 6, "    weight: -1"), "solver.params.weight (line 6)", "must be > 0"),
    (edit(SITE, 2, "modality: pet"), "modality (line 2)", "expected one of ct, mri, got str 'pet'"),
    (edit(SITE, 4, "  name: zf"), "solver.name (line 4)", "zf does not reconstruct ct"),
    (edit(SITE, 4, "  name: magic"), "solver.name (line 4)", "expected one of fbp, cgls"),
    (edit(SITE, 8, "  formats: [nifti, png]"), "outputs.formats[1] (line 8)", "got str 'png'"),
    (edit(SITE, 8, "  formats: nifti"), "outputs.formats (line 8)", "expected a non-empty list"),
    (edit(SITE, 8, "  formats: []"), "outputs.formats (line 8)", "expected a non-empty list"),
    (edit(SITE, 8, "  naming: out/{study}"), "outputs.naming (line 8)", "without '/'"),
    (edit(SITE, 8, "  naming: '{study}_{date}'"), "outputs.naming (line 8)",
     "only the fields {study} and {method}"),
    (edit(SITE, 8, "  figure: maybe"), "outputs.figure (line 8)", "expected true or false"),
    (edit(SITE, 1, "version: 2"), "version (line 1)", "expected 1"),
    (edit(SITE, 1, "version: 1.0"), "version (line 1)", "got float 1.0"),
    (edit(SITE, 2, "modality: ct\nacquisition:\n  coils: 8"), "acquisition.coils (line 4)",
     "only for mri protocols"),
    (edit(SITE, 2, "modality: ct\nacquisition:\n  views: 0"), "acquisition.views (line 4)",
     "must be >= 1"),
    (edit(SITE, 2, "modality: ct\ninput: {kind: kspace}"), "input.kind (line 3)",
     "a ct protocol reads sinogram"),
    (edit(SITE, 2, "modality: ct\nprior: my.pt"), "prior (line 3)", "tv uses no prior"),
    (edit(SITE, 2, "modality: ct\ndevice: gpu"), "device (line 3)",
     "expected one of cpu, cuda, auto"),
    (edit(SITE, 2, "modality: ct\nseed: -1"), "seed (line 3)", "expected an integer >= 0"),
    (edit(SITE, 4, "  name: tv\n  name: fbp"), "solver.name (line 5)",
     "duplicate key (first at line 4)"),
    (SITE + "seed: 1\nseed: 2\n", "seed (line 10)", "duplicate key (first at line 9)"),
])
def test_error_names_file_key_and_line(tmp_path, text, where, problem):
    path = write(tmp_path, "site.yaml", text)
    message = error_of(path)
    assert message.startswith(f"{path}: {where}: "), message
    assert problem in message, message


@pytest.mark.parametrize("line,key", [(2, "modality"), (1, "version"), (3, "solver")])
def test_missing_required_field(tmp_path, line, key):
    text = edit(SITE, line, None) if key != "solver" else "version: 1\nmodality: ct\n"
    path = write(tmp_path, "site.yaml", text)
    assert error_of(path) == f"{path}: {key}: required field is missing"


def test_missing_nested_field_names_its_mapping_and_line(tmp_path):
    path = write(tmp_path, "site.yaml", edit(SITE, 4, None))
    assert error_of(path) == (f"{path}: solver.name: required field is missing from "
                              "'solver' (line 3)")


def test_sigma_order_is_checked(tmp_path):
    text = edit(SITE, 4, "  name: dds") .replace("iterations: 20",
                                                 "sigma_max: 1.0\n    sigma_min: 2")
    path = write(tmp_path, "site.yaml", text)
    assert error_of(path) == (f"{path}: solver.params.sigma_min (line 7): sigma_min (2) must "
                              "be below sigma_max (1)")


@pytest.mark.parametrize("text,problem", [
    ("version: 1\nsolver: [unclosed\n", "line 3: not valid YAML"),
    ("version: 1\n  modality: ct\n", "line 2: not valid YAML"),
    ("- a\n- b\n", "not a YAML mapping (found list)"),
    ("just words\n", "not a YAML mapping (found str)"),
    ("", "empty"),
    ("version: 1\n---\nversion: 1\n", "not valid YAML: expected a single document"),
    ("version: !!python/object/apply:os.system ['echo hacked']\n",
     "version (line 1): unsupported tag"),
    ("version: 1\nseed: !!python/name:os.system\n", "line 2: not valid YAML: could not "
                                                    "determine a constructor"),
    ("version: 1\n1: x\n", "1 (line 2): keys must be non-empty strings, got int 1"),
    ("a: &a [x, x]\nb: &b [*a, *a]\nversion: 1\n<<: {modality: ct}\n",
     "<< (line 4): YAML merge keys (<<) are not supported"),
    # the reader's, the constructor's and the composer's own failures are one line too
    ("version: 1\nname: a\x00b\n", "not valid YAML: unacceptable character #x0000"),
    ("version: 1\ndescription: 2001-02-30\n", "not valid YAML: day is out of range"),
    ("version: 1\nseed: " + "[" * 5000 + "]" * 5000 + "\n", "not valid YAML: nested too deeply"),
])
def test_not_a_protocol(tmp_path, text, problem):
    path = write(tmp_path, "site.yaml", text)
    message = error_of(path)
    assert message.startswith(f"{path}: ") and problem in message, message


def test_alias_bomb_is_refused(tmp_path):
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for name, prev in zip("bcde", "abcd"):
        text += f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]\n"
    message = error_of(write(tmp_path, "bomb.yaml", text))
    assert "more than 10000 values (aliases?)" in message


def test_missing_file_and_unknown_name(tmp_path):
    assert error_of(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: no such protocol file"
    assert error_of(tmp_path) == f"{tmp_path}: is a folder, not a protocol file"
    message = error_of(Path("ct-sparse-nope"))
    assert "no shipped protocol of that name" in message and "ct-sparse-tv" in message


# -- extends -------------------------------------------------------------------------------
def test_extends_chain_merges_child_wins_lists_replaced(tmp_path):
    write(tmp_path, "lib/base.yaml", """\
version: 1
name: base-name
extends: ct-sparse-tv
description: the base
solver:
  name: tv
  params: {iterations: 30}
outputs:
  formats: [nifti, dicom]
""")
    child = write(tmp_path, "child.yaml", """\
version: 1
extends: ./lib/../lib/base.yaml
acquisition: {views: 60}
solver:
  params: {weight: 0.5}
outputs:
  formats: [npy]
""")
    protocol = load_protocol(child)
    assert protocol.name == "child" and protocol.description == "the base"
    assert protocol.modality == "ct" and protocol.acquisition.geometry == "parallel"
    assert protocol.acquisition.views == 60 and protocol.device == "auto"
    assert protocol.solver.params == {"iterations": 30, "weight": 0.5}
    assert protocol.outputs.formats == ("npy",) and protocol.outputs.naming == "{study}_{method}"
    assert protocol.source == child


def test_extends_error_names_the_file_that_set_the_key(tmp_path):
    parent = write(tmp_path, "parent.yaml", SITE.replace("iterations: 20", "iters: 20"))
    child = write(tmp_path, "child.yaml", "version: 1\nextends: parent.yaml\nseed: 3\n")
    assert error_of(child).startswith(f"{parent}: solver.params.iters (line 6): unknown key")
    # the child's own keys are named by the child
    write(tmp_path, "parent.yaml", SITE)
    write(tmp_path, "child.yaml", "version: 1\nextends: parent.yaml\n\nsolver:\n  foo: 1\n")
    assert error_of(child).startswith(f"{child}: solver.foo (line 5): unknown key")


def test_extends_cycle_names_the_files(tmp_path):
    a = write(tmp_path, "a.yaml", "version: 1\nextends: b.yaml\n")
    b = write(tmp_path, "b.yaml", "version: 1\nextends: a.yaml\n")
    message = error_of(a)
    assert message.startswith(f"{b}: extends (line 2): extends makes a cycle: ")
    assert message.endswith(f"{a.resolve()} -> {b.resolve()} -> {a.resolve()}")
    loop = write(tmp_path, "self.yaml", "version: 1\nextends: ./self.yaml\n")
    assert "cycle" in error_of(loop)


def test_extends_missing_parent(tmp_path):
    path = write(tmp_path, "c.yaml", "version: 1\nextends: gone.yaml\n")
    assert error_of(path).startswith(f"{path}: extends (line 2): no such protocol file")
    path = write(tmp_path, "d.yaml", "version: 1\n\nextends: mri-nothing\n")
    assert error_of(path).startswith(f"{path}: extends (line 3): no protocol file 'mri-nothing'")
    path = write(tmp_path, "e.yaml", "version: 1\nextends: [a, b]\n")
    assert error_of(path).startswith(f"{path}: extends (line 2): expected a shipped protocol")


# -- overrides -----------------------------------------------------------------------------
def test_overrides_apply_and_change_the_hash(tmp_path):
    path = write(tmp_path, "site.yaml", SITE)
    plain = load_protocol(path)
    protocol = load_protocol(path, ["solver.params.weight=1e-3", "outputs.formats=[nifti,npy]",
                                    "acquisition.views=90", "seed=7", "description=a b"])
    assert protocol.solver.params == {"iterations": 20, "weight": 1e-3}
    assert protocol.outputs.formats == ("nifti", "npy") and protocol.seed == 7
    assert protocol.acquisition.views == 90 and protocol.description == "a b"
    assert protocol.hash != plain.hash
    assert apply_overrides(plain, ["solver.params.weight=1e-3", "outputs.formats=[nifti,npy]",
                                   "acquisition.views=90", "seed=7",
                                   "description=a b"]).hash == protocol.hash


def test_nested_adapt_parameters_hash_round_trip_and_stay_frozen(tmp_path):
    """DDS's ``adapt`` is a model inside the parameters: the hash must serialise it
    (it raised TypeError), the YAML must load back to the same protocol, and editing
    it must be impossible."""
    protocol = load_protocol("ct-sparse-dds", ["solver.params.adapt={steps: 2}"])
    adapt = protocol.solver.params["adapt"]
    assert (adapt.steps, adapt.lr) == (2, 2e-3)
    assert protocol.hash != load_protocol("ct-sparse-dds", ["solver.params.adapt={}"]).hash
    assert protocol.to_dict()["solver"]["params"]["adapt"] == {
        "steps": 2, "lr": 2e-3, "rank": 4, "every": 1}
    again = load_protocol(write(tmp_path, "again.yaml", protocol_yaml(protocol)))
    assert again.hash == protocol.hash
    with pytest.raises(ValidationError):
        adapt.steps = 3
    with pytest.raises(InputError, match="adapt.often: unknown key for dds; expected one of "
                                         "steps, lr, rank, every"):
        load_protocol("ct-sparse-dds", ["solver.params.adapt={often: 2}"])


def test_override_of_the_solver_drops_its_parameters():
    protocol = load_protocol("ct-sparse-tv", ["solver.name=fbp", "solver.params.filter=hann"])
    assert protocol.solver == load_protocol("ct-sparse-fbp", ["solver.params.filter=hann"]).solver
    protocol = load_protocol("ct-sparse-tv", ["solver={name: sirt, params: {iterations: 9}}"])
    assert protocol.solver.params == {"iterations": 9}


def test_overrides_of_a_mapping():
    raw = {"version": 1, "name": "inline", "extends": "ct-sparse-fbp"}
    protocol = apply_overrides(raw, ["device=cpu"])
    assert protocol.name == "inline" and protocol.solver.name == "fbp" and protocol.source is None
    with pytest.raises(InputError, match="^<protocol>: modality: expected one of ct, mri"):
        apply_overrides({"version": 1, "name": "x", "modality": "pet", "solver": {}}, [])


@pytest.mark.parametrize("override,message", [
    ("solver.params.foo=1", "--set solver.params.foo: unknown key for tv; expected one of "
                            "iterations, weight"),
    ("solver.params.weight=-1", "--set solver.params.weight: must be > 0, got -1"),
    ("solver.params.iterations=lots", "--set solver.params.iterations: expected an integer"),
    ("outputs.formats=[nifti,png]", "--set outputs.formats: outputs.formats[1]: expected one of"),
    ("outputs={formats: [nifti], colour: red}", "--set outputs: outputs.colour: unknown key"),
    ("solver.name.deep=1", "--set solver.name.deep: solver.name is str 'tv', not a mapping"),
    ("seed=[1", "--set seed: value is not valid YAML"),
    ("seed=\x01", "--set seed: value is not valid YAML: unacceptable character #x0001"),
    ("seed=" + "[" * 5000 + "]" * 5000, "--set seed: value is not valid YAML: nested too deeply"),
    ("seed", "--set seed: expected KEY=VALUE"),
    ("solver..name=tv", "--set solver..name=tv: expected KEY=VALUE"),
    ("extends=ct-sparse-fbp", "--set extends: extends cannot be overridden"),
    ("solver.name=zf", "--set solver.name: zf does not reconstruct ct"),
])
def test_bad_overrides_name_the_override(tmp_path, override, message):
    path = write(tmp_path, "site.yaml", SITE)
    assert error_of(path, (override,)).startswith(message)


def test_override_that_breaks_a_file_value_names_the_file(tmp_path):
    path = write(tmp_path, "site.yaml", edit(SITE, 2, "modality: ct\ninput: {kind: sinogram}"))
    assert error_of(path, ("modality=mri",)) == (f"{path}: input.kind (line 3): a mri protocol "
                                                 "reads kspace, got str 'sinogram'")


# -- priors --------------------------------------------------------------------------------
DDS_SITE = "version: 1\nmodality: mri\nsolver: {name: dds}\nprior: {prior}\n"


def test_prior_path_is_resolved_against_the_file_that_set_it(tmp_path):
    weights = write(tmp_path, "site/weights/knee.pt", "")
    site = write(tmp_path, "site/knee.yaml", DDS_SITE.replace("{prior}", "weights/knee.pt"))
    protocol = load_protocol(site)
    assert protocol.prior == str(weights.resolve()) == prior_reference(protocol)
    # a child elsewhere inherits the resolved path; its own relative prior is its own
    child = write(tmp_path, "child.yaml", "version: 1\nextends: site/knee.yaml\n")
    assert load_protocol(child).prior == str(weights.resolve())
    mine = write(tmp_path, "mine.pt", "")
    write(tmp_path, "child.yaml", "version: 1\nextends: site/knee.yaml\nprior: mine.pt\n")
    assert load_protocol(child).prior == str(mine.resolve())
    # a change of solver to one without a prior is refused while a path is set
    assert error_of(child, ("solver.name=cgsense",)).endswith(
        "cgsense uses no prior; a prior is for dds, rmpvi, dps (leave it out or write 'default')")


def test_prior_errors(tmp_path):
    path = write(tmp_path, "site.yaml", DDS_SITE.replace("{prior}", "absent.pt"))
    assert error_of(path) == (f"{path}: prior (line 4): no such checkpoint file "
                              f"{tmp_path / 'absent.pt'}")
    write(tmp_path, "weights.txt", "")
    path = write(tmp_path, "site.yaml", DDS_SITE.replace("{prior}", "weights.txt"))
    assert "expected 'default' or a checkpoint file (.pt)" in error_of(path)
    path = write(tmp_path, "site.yaml", DDS_SITE.replace("{prior}", "default"))
    assert prior_reference(load_protocol(path)) == "default"


def test_prior_set_on_the_command_line_is_relative_to_the_working_folder(tmp_path,
                                                                         monkeypatch):
    weights = write(tmp_path, "cwd/w.pt", "")
    monkeypatch.chdir(tmp_path / "cwd")
    assert load_protocol("mri-cartesian-dds", ["prior=w.pt"]).prior == str(weights.resolve())
    with pytest.raises(InputError, match="^--set prior: no such checkpoint file"):
        load_protocol("mri-cartesian-dds", ["prior=x.pt"])


def test_published_prior_references(tmp_path):
    weights = write(tmp_path, "weights/adm.pt", "")
    for kind in ("adm", "ncsnpp", "medrecon"):
        path = write(tmp_path, "site.yaml", DDS_SITE.replace("{prior}", f"{kind}:weights/adm.pt"))
        protocol = load_protocol(path)
        assert protocol.prior == prior_reference(protocol) == f"{kind}:{weights.resolve()}"
        assert load_protocol(write(tmp_path, "copy.yaml", protocol_yaml(protocol))).hash == \
            protocol.hash
    path = write(tmp_path, "site.yaml", DDS_SITE.replace("{prior}", "adm:gone.pt"))
    assert error_of(path) == f"{path}: prior (line 4): no such checkpoint file {tmp_path}/gone.pt"


def test_extends_stays_in_the_protocols_folder(tmp_path):
    write(tmp_path, "base.yaml", SITE)
    inner = tmp_path / "sub" / "child.yaml"
    for target in ("../base.yaml", str(tmp_path / "base.yaml"), "./x/../../base.yaml"):
        write(tmp_path, "sub/child.yaml", f"version: 1\nextends: {target}\n")
        assert error_of(inner).startswith(f"{inner}: extends (line 2): {target!r} is outside "
                                          f"this protocol's folder {inner.parent}")


def test_public_types():
    assert isinstance(load_protocol("ct-sparse-fbp"), Protocol)
    assert {"fbp", "tv", "dds"} <= set(METHODS)


def test_json_schema_describes_the_file():
    schema = protocol_json_schema()
    json.dumps(schema)
    assert schema["additionalProperties"] is False and "source" not in schema["properties"]
    assert {"version", "modality", "solver"} == set(schema["required"])
    solver = schema["$defs"]["SolverSpec"]
    assert solver["properties"]["name"]["enum"] == list(METHODS)
    cases = {case["if"]["properties"]["name"]["const"]: case["then"]["properties"]["params"]
             for case in solver["allOf"]}
    assert set(cases) == set(METHODS)
    assert set(cases["dds"]["properties"]) == set(METHODS["dds"].params.model_fields)
    assert "relative_gamma" in cases["dds"]["properties"]
    refs = set(re.findall(r"#/\$defs/(\w+)", json.dumps(schema)))
    assert "AdaptParams" in refs and refs <= set(schema["$defs"]), refs - set(schema["$defs"])


# -- command line ----------------------------------------------------------------------------
def run(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_list(capsys):
    code, out, err = run(capsys, "protocols", "list")
    assert code == 0 and not err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == SHIPPED
    assert "total variation" in lines[SHIPPED.index("ct-sparse-tv")]


def test_cli_show_prints_resolved_yaml_with_hash(capsys, tmp_path):
    code, out, err = run(capsys, "protocols", "show", "ct-sparse-dds", "--set",
                         "solver.params.steps=20", "--set", "seed=3")
    protocol = load_protocol("ct-sparse-dds", ["solver.params.steps=20", "seed=3"])
    assert code == 0 and not err and f"# sha256: {protocol.hash}" in out
    assert load_protocol(write(tmp_path, "shown.yaml", out)).hash == protocol.hash


def test_cli_validate(capsys, tmp_path):
    good = write(tmp_path, "good.yaml", SITE)
    bad = write(tmp_path, "bad.yaml", edit(SITE, 6, "    iters: 20"))
    worse = write(tmp_path, "worse.yaml", "version: 1\nmodality: pet\nsolver: {name: tv}\n")
    code, out, err = run(capsys, "protocols", "validate", good, "mri-radial-dps")
    assert code == 0 and not err
    assert out.splitlines() == [f"{good}: ok (good, ct, tv)",
                                "mri-radial-dps: ok (mri-radial-dps, mri, dps)"]
    code, out, err = run(capsys, "protocols", "validate", bad, good, worse)
    assert code == EXIT_BAD_INPUT and out == f"{good}: ok (good, ct, tv)\n"
    assert err.splitlines() == [
        f"medrecon: error: {bad}: solver.params.iters (line 6): unknown key for tv; "
        "expected one of iterations, weight",
        f"medrecon: error: {worse}: modality (line 2): expected one of ct, mri, got str 'pet'"]
    code, out, err = run(capsys, "protocols", "validate", good, "--set", "solver.params.x=1")
    assert code == EXIT_BAD_INPUT and not out and "Traceback" not in err
    assert err == "medrecon: error: --set solver.params.x: unknown key for tv; expected one " \
                  "of iterations, weight\n"


def test_a_bad_dicom_identity_template_is_refused_when_the_protocol_loads():
    """Review find: a template with an unknown field loaded, and every study failed after
    its reconstruction."""
    with pytest.raises(InputError, match=r"outputs\.dicom\.study: only the fields"):
        load_protocol("ct-sparse-fbp", ["outputs.dicom.study='{foo}'"])
    assert load_protocol("ct-sparse-fbp", ["outputs.dicom.patient_id='P-{sha256}'"]
                         ).outputs.dicom.patient_id == "P-{sha256}"
