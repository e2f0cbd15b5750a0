"""Site protocols: a typed, frozen YAML schema (version 1), validated once where it enters.

A protocol fixes how a site reconstructs one kind of study: the modality and the input
it expects, the acquisition it should match, the solver with its parameters (their
names, defaults and checks are the method's own, :mod:`medrecon.methods`), the prior of
a solver that needs one, the device and seed, and the outputs to write. It enters as a
YAML file (a shipped name such as ``ct-sparse-tv`` or a path), optionally extended from
another protocol (mappings merge, the child wins, lists are replaced, a changed solver
name drops the inherited solver parameters) and changed by ``--set KEY=VALUE`` overrides
(VALUE read as YAML: ``outputs.formats=[nifti,hdf5]``); every mistake ends with one
:class:`~medrecon.errors.InputError` naming the file, the dotted key and its line. After
that only the frozen pydantic models below flow on (``solver.params`` is a read-only
mapping). :func:`protocol_json_schema` describes the file for editors.

>>> protocol = load_protocol("ct-sparse-tv", ["solver.params.iterations=50"])
>>> protocol.modality, protocol.solver.name, protocol.solver.params["iterations"]
('ct', 'tv', 50)

The schema (``null`` means "anything" for an acquisition field and "the method's default
for the modality" for a solver parameter)::

    version: 1                  # required
    name: ct-sparse-tv          # default: the file's stem (never inherited)
    description: "..."
    extends: ct-sparse-tv       # a shipped name, or a file in this file's folder (or below)
    modality: ct                # required: ct | mri
    input: {kind: sinogram, pattern: "*.h5"}   # kind: sinogram (ct), kspace (mri)
    acquisition: {geometry: parallel, views: null}   # ct: geometry, views
    #            {trajectory: cartesian, coils: null, calibration: null}  # mri
    prior: default              # default, a checkpoint (.pt), adm:PATH or ncsnpp:PATH
    solver: {name: tv, params: {iterations: null, weight: null}}   # medrecon.methods
    device: cpu                 # cpu | cuda | auto
    seed: 0
    outputs: {formats: [nifti], naming: "{study}", figure: true, report: true}

YAML is read by PyYAML's safe composer and walked node by node: each node has its line
(``start_mark``), so key lines, duplicate keys, tags, merge keys (``<<``) and a node cap
(alias bombs) take a few lines and only safe constructors run. PyYAML is a dependency
already and keeps YAML 1.1 scalars (``yes`` is true), so site files read and hash as
before; ruamel.yaml's round-trip loader would add a dependency, switch to YAML 1.2 and
keep unknown tags and merge keys, so the same walk would be needed on top of it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import string
import warnings
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, NamedTuple, NoReturn

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
)

from medrecon.errors import InputError
from medrecon.methods import METHODS, MODALITIES, names

VERSION = 1
INPUT_KINDS = {"ct": "sinogram", "mri": "kspace"}
ACQUISITION_KEYS = {"ct": ("geometry", "views"), "mri": ("trajectory", "coils", "calibration")}
DEFAULT_PRIOR = "default"
PRIOR_KINDS = ("medrecon", "adm", "ncsnpp")  # as medrecon.priors.defaults.KINDS (no torch)
PRIOR_SUFFIXES = (".pt", ".pth")
MAX_NODES = 10_000  # a protocol is small; this stops alias bombs


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"bool {str(value).lower()}"
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


# -- the typed protocol ------------------------------------------------------------------
def _must(ok: Callable[[Any], Any], problem: str) -> Callable[[Any], Any]:
    """A validator: the value if ``ok(value)``, else ValueError(problem, ``{got}`` filled)."""
    def check(value: Any) -> Any:
        if not ok(value):
            raise ValueError(problem.format(got=_show(value)))
        return value
    return check


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _naming(template: str) -> str:
    """Check an output name template: the field {study} and no folder separators."""
    if "/" in template or "\\" in template:
        raise ValueError("a file name, without '/'")
    try:
        fields = [(name, spec, conv) for _, name, spec, conv
                  in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc}); write e.g. '{{study}}_tv'") from None
    for name, spec, conv in fields:
        if name != "study" or spec or conv:
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"only the field {{study}} is allowed, got {shown}")
    if not fields:
        raise ValueError("must contain {study} (the input file's stem), "
                         "or studies overwrite each other")
    if template.format(study="x").strip(".") == "":
        raise ValueError("not a usable file name")
    return template


Text = Annotated[str, AfterValidator(_must(str.strip, "expected a non-empty string, got {got}"))]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class InputSpec(_Model):
    """What the protocol reads: ``kind`` (sinogram | kspace) and the glob for folders."""

    kind: Literal["sinogram", "kspace"] | None = Field(None, description="default: modality's")
    pattern: Annotated[Text, AfterValidator(_must(
        lambda glob: not Path(glob).is_absolute() and ".." not in Path(glob).parts,
        "a glob inside the input folder: no absolute path, no '..'"))] = "*.h5"


class Acquisition(_Model):
    """Expectations checked against each input file; None accepts anything.

    CT uses ``geometry`` and ``views``; MRI ``trajectory``, ``coils`` and ``calibration``
    (the ESPIRiT calibration width; None picks it from the data).
    """

    geometry: Literal["parallel", "fan"] | None = None
    views: int | None = Field(None, ge=1)
    trajectory: Literal["cartesian", "radial", "spiral"] | None = None
    coils: int | None = Field(None, ge=1)
    calibration: int | None = Field(None, ge=6)


class SolverSpec(_Model):
    """A method's name and every one of its parameters (None = the method's default)."""

    name: Literal[names()]  # type: ignore[valid-type]
    params: Mapping[str, Any] = Field(MappingProxyType({}), description="null: default")


class Outputs(_Model):
    """Formats to write, the file-name template (field ``{study}``), figure and report."""

    formats: Annotated[tuple[Literal["nifti", "dicom", "hdf5", "npy"], ...],
                       Field(min_length=1, strict=False)] = ("nifti",)
    naming: Annotated[Text, AfterValidator(_naming)] = "{study}"
    figure: bool = True
    report: bool = True

    def stem(self, study: str) -> str:
        """The output file stem of a study (the input file's stem).

        >>> Outputs(naming="{study}_tv").stem("knee01")
        'knee01_tv'
        """
        return self.naming.format(study=study)


class Protocol(_Model):
    """A validated site protocol; build it with :func:`load_protocol`.

    >>> p = load_protocol("mri-cartesian-cgsense")
    >>> p.input.kind, p.acquisition.trajectory, len(p.hash)
    ('kspace', 'cartesian', 64)
    """

    version: Annotated[Literal[1], BeforeValidator(_must(
        lambda v: _integer(v) and v == VERSION, "expected 1 (the only schema version), got {got}"))]
    name: Text = Field(description="default: the file's stem")
    description: str = ""
    modality: Literal[MODALITIES]  # type: ignore[valid-type]
    input: InputSpec = InputSpec()
    acquisition: Acquisition = Acquisition()
    prior: Text = Field(DEFAULT_PRIOR, description="default, PATH.pt, adm:PATH, ncsnpp:PATH")
    solver: SolverSpec
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    seed: Annotated[int, Field(ge=0, lt=2**64), BeforeValidator(_must(
        lambda v: _integer(v) and 0 <= v < 2**64,
        "expected an integer >= 0 (below 2**64), got {got}"))] = 0
    outputs: Outputs = Outputs()
    _source: Path | None = PrivateAttr(None)
    _raw: Any = PrivateAttr(None)  # the resolved _Raw, for apply_overrides

    @property
    def source(self) -> Path | None:
        """The protocol file it was loaded from (None for a mapping)."""
        return self._source

    def to_dict(self) -> dict[str, Any]:
        """The resolved protocol as plain data: after extends and overrides, defaults filled."""
        data = self.model_dump(exclude={"solver"})
        data["acquisition"] = {k: data["acquisition"][k] for k in ACQUISITION_KEYS[self.modality]}
        data["outputs"]["formats"] = list(self.outputs.formats)
        solver = {"name": self.solver.name, "params": dict(self.solver.params)}
        return {key: solver if key == "solver" else data[key] for key in type(self).model_fields}

    @property
    def hash(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`to_dict`."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Protocol) and (self.hash, self.source) == (other.hash,
                                                                            other.source)

    def __hash__(self) -> int:
        return hash((self.hash, self.source))


# -- public functions -----------------------------------------------------------------
def shipped_protocols() -> list[str]:
    """Names of the protocols shipped with medrecon, sorted.

    >>> "ct-sparse-tv" in shipped_protocols()
    True
    """
    folder = resources.files("medrecon.protocols")
    return sorted(p.name[:-len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_protocol(name_or_path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Protocol:
    """Load, resolve (extends, then ``--set`` overrides) and validate a protocol.

    ``name_or_path`` without "/" and without a .yaml/.yml suffix that is not an existing
    file names a shipped protocol; anything else is a path.

    >>> dict(load_protocol("ct-sparse-fbp", ["solver.params.filter=hann"]).solver.params)
    {'filter': 'hann'}
    """
    text = os.fspath(name_or_path)
    path = _shipped_path(text, text, None) if _names_shipped(text, Path.cwd()) else Path(text)
    return _validate(_apply(_expand(_read_file(path), path, ()), overrides), path)


def apply_overrides(raw_or_protocol: Protocol | Mapping[str, Any],
                    overrides: Sequence[str]) -> Protocol:
    """Apply ``KEY=VALUE`` overrides (VALUE parsed as YAML) and validate the result.

    ``raw_or_protocol`` is a loaded protocol or a plain protocol mapping (its ``extends``
    and relative ``prior`` are resolved against the working folder).

    >>> p = apply_overrides(load_protocol("ct-sparse-tv"), ["outputs.formats=[nifti,hdf5]"])
    >>> p.outputs.formats
    ('nifti', 'hdf5')
    """
    if isinstance(raw_or_protocol, Protocol):
        source, raw = raw_or_protocol.source, raw_or_protocol._raw
    else:
        source = None
        raw = _expand(_from_mapping(raw_or_protocol, "<protocol>"), Path.cwd() / "<protocol>",
                      ())
    return _validate(_apply(raw, overrides), source)


def protocol_yaml(protocol: Protocol) -> str:
    """The resolved protocol as YAML, headed by comments with its source and hash.

    Loading the text back gives a protocol with the same :attr:`Protocol.hash`.
    """
    head = f"# medrecon protocol {protocol.name}"
    if protocol.source is not None:
        head += f", resolved from {protocol.source}"
    body = yaml.dump(protocol.to_dict(), Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     width=100)
    return f"{head}\n# sha256: {protocol.hash}\n{body}"


def prior_reference(protocol: Protocol) -> str | None:
    """The prior a protocol's method needs ("default", a checkpoint, ``adm:PATH`` ...),
    or None for a method without a prior.

    >>> [prior_reference(load_protocol(n)) for n in ("ct-sparse-dds", "ct-sparse-tv")]
    ['default', None]
    """
    return protocol.prior if METHODS[protocol.solver.name].needs_prior else None


def protocol_json_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of a protocol file, for editors: each method's
    parameters apply under its ``solver.name``.

    >>> schema = protocol_json_schema()
    >>> schema["properties"]["modality"]["enum"], "extends" in schema["properties"]
    (['ct', 'mri'], True)
    """
    with warnings.catch_warnings():  # the frozen mapping default has no JSON form; fine
        warnings.simplefilter("ignore")
        schema = Protocol.model_json_schema()
    schema["properties"]["extends"] = {"type": "string", "description": "a shipped protocol "
                                       "or a file in this file's folder; this file wins"}
    schema["required"] = [key for key in schema["required"] if key != "name"]
    cases = []
    for name, record in METHODS.items():
        properties = record.params.model_json_schema().get("properties", {})
        params = {"type": "object", "additionalProperties": False, "properties": {
            key: {"anyOf": [value, {"type": "null"}], "description": value.get("description",
                  key)} for key, value in properties.items()}}
        cases.append({"if": {"properties": {"name": {"const": name}}},
                      "then": {"properties": {"params": params}}})
    schema["$defs"]["SolverSpec"]["allOf"] = cases
    return schema


# -- YAML with lines ----------------------------------------------------------------------
Key = tuple[str | int, ...]  # a key's path, as pydantic's error locations: ("outputs", 0)


class _Origin(NamedTuple):
    """Where a key was set: a file and line, or a ``--set`` override."""

    source: str
    line: int | None
    base: Path                     # relative paths set here are resolved against it
    override: str | None = None    # the dotted key of the --set that set it


class _Raw(NamedTuple):
    """Parsed YAML (plain dicts, lists, scalars) and the origin of keys (nearest wins)."""

    data: dict[str, Any]
    origins: dict[Key, _Origin]


class _Loader(yaml.SafeLoader):
    """The safe loader, reading ``1e-3`` as a float (YAML 1.2) rather than a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


class _Dumper(yaml.SafeDumper):
    """The safe dumper, writing lists in flow style: ``formats: [nifti, hdf5]``."""


_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=True))


def _dotted(path: Key) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _parse_yaml(text: str, origin: _Origin, prefix: Key = ()) -> tuple[Any, _Raw]:
    """Parse YAML text into plain values, with the line of every key under ``prefix``."""
    loader = _Loader(text)
    raw = _Raw({}, {})
    budget, lines = [MAX_NODES], {}

    def at(path: Key, node: yaml.Node) -> Key:
        if origin.line is not None:
            raw.origins[path] = origin._replace(line=node.start_mark.line + 1)
        return path

    def plain(node: yaml.Node, path: Key) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            _fail(raw, at(path, node), f"more than {MAX_NODES} values (aliases?); not a protocol")
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_object(node, deep=True)
        if node.tag not in ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"):
            _fail(raw, at(path, node), f"unsupported tag {node.tag}")
        if isinstance(node, yaml.SequenceNode):
            return [plain(item, at((*path, i), item)) for i, item in enumerate(node.value)]
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                _fail(raw, at((*path, "<<"), key_node),
                      "YAML merge keys (<<) are not supported; use extends")
            if not isinstance(key_node, yaml.ScalarNode):
                _fail(raw, at(path, key_node), "keys must be non-empty strings, got a collection")
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str) or not key:
                _fail(raw, at((*path, str(key)), key_node),
                      f"keys must be non-empty strings, got {_show(key)}")
            if key in mapping:
                _fail(raw, at((*path, key), key_node),
                      f"duplicate key (first at line {lines[(*path, key)]})")
            lines[(*path, key)] = key_node.start_mark.line + 1
            mapping[key] = plain(value_node, at((*path, key), key_node))
        return mapping

    raw.origins[prefix] = origin
    try:
        node = loader.get_single_node()
        return (None if node is None else plain(node, at(prefix, node))), raw
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        if origin.override is not None:
            raise InputError(origin.source, None, f"value is not valid YAML: {problem}") from None
        where = None if mark is None else f"line {mark.line + 1}"
        raise InputError(origin.source, where, f"not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise InputError(origin.source, None, f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def _origin_of(raw: _Raw, path: Key) -> _Origin:
    """The origin of ``path``, or of its nearest ancestor that has one."""
    while path not in raw.origins:
        path = path[:-1]
    return raw.origins[path]


def _fail(raw: _Raw, path: Key, problem: str, *, missing_from: Key | None = None) -> NoReturn:
    """Raise the InputError of ``path``: "FILE: KEY (line N): problem"."""
    origin = _origin_of(raw, path if missing_from is None else missing_from)
    key = _dotted(path) or None
    if origin.override is not None:
        raise InputError(origin.source, None if key == origin.override else key, problem)
    if missing_from is not None:
        if missing_from and origin.line:
            problem += f" from '{_dotted(missing_from)}' (line {origin.line})"
    elif key and origin.line is not None:
        key = f"{key} (line {origin.line})"
    elif origin.line is not None and origin.line > 1:
        key = f"line {origin.line}"
    raise InputError(origin.source, key, problem)


# -- reading, extends, overrides -------------------------------------------------------------
def _names_shipped(text: str, base: Path) -> bool:
    return ("/" not in text and "\\" not in text and not text.endswith((".yaml", ".yml"))
            and not (base / text).exists())


def _shipped_path(name: str, source: str, key: str | None) -> Path:
    path = Path(str(resources.files("medrecon.protocols").joinpath(f"{name}.yaml")))
    if not path.is_file():
        raise InputError(source, key, f"no protocol file {name!r} and no shipped protocol of "
                                      f"that name; shipped: {', '.join(shipped_protocols())}")
    return path


def _read_file(path: Path) -> _Raw:
    if not path.exists():
        raise InputError(path, None, "no such protocol file")
    if path.is_dir():
        raise InputError(path, None, "is a folder, not a protocol file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(path, None, "not a text (UTF-8) file") from None
    except OSError as exc:
        raise InputError(path, None, f"cannot be read: {exc.strerror or exc}") from None
    origin = _Origin(str(path), 1, path.parent)
    data, raw = _parse_yaml(text, origin)
    if data is None:
        raise InputError(path, None, "empty; a protocol is a YAML mapping (version: 1, ...)")
    if not isinstance(data, dict):
        raise InputError(path, None, f"not a YAML mapping (found {type(data).__name__}); "
                                     "a protocol starts with version: 1")
    raw.origins[()] = origin
    return _Raw(data, raw.origins)


def _expand(raw: _Raw, path: Path, chain: tuple[Path, ...]) -> _Raw:
    """Resolve ``extends`` of ``raw`` (read from ``path``): the parents' merge under it."""
    if "extends" not in raw.data:
        return raw
    value = raw.data.pop("extends")
    if not isinstance(value, str) or not value:
        _fail(raw, ("extends",), f"expected a shipped protocol name or a path, got {_show(value)}")
    origin = _origin_of(raw, ("extends",))
    source, key = origin.source, f"extends (line {origin.line})" if origin.line else "extends"
    folder = path.parent.resolve()
    if _names_shipped(value, path.parent):
        parent = _shipped_path(value, source, key)
    elif Path(value).expanduser().is_absolute() or not (folder / value).resolve().is_relative_to(
            folder):
        raise InputError(source, key, f"{value!r} is outside this protocol's folder {folder}; "
                                      "extend a shipped protocol or a file in that folder")
    else:
        parent = path.parent / value
    seen = (*chain, path.resolve())
    if parent.resolve() in seen:
        loop = [str(p) for p in seen[seen.index(parent.resolve()):]] + [str(parent.resolve())]
        raise InputError(source, key, f"extends makes a cycle: {' -> '.join(loop)}")
    if not parent.is_file():
        raise InputError(source, key, f"no such protocol file {parent}")
    base = _expand(_read_file(parent), parent, seen)
    base.data.pop("name", None)  # a name is never inherited
    if _solver_name(raw.data) not in (None, _solver_name(base.data)):
        _drop_params(base, keep_overrides=False)  # parameters belong to their method
    _merge_into(base.data, raw.data)
    return _Raw(base.data, {**base.origins, **raw.origins})


def _solver_name(data: Mapping[str, Any]) -> Any:
    solver = data.get("solver")
    return solver.get("name") if isinstance(solver, dict) else None


def _drop_params(raw: _Raw, *, keep_overrides: bool) -> None:
    """Forget the solver parameters (except those set by --set) when the solver changes."""
    solver = raw.data.get("solver")
    params = solver.get("params") if isinstance(solver, dict) else None
    for key in list(params) if isinstance(params, dict) else ():
        if not (keep_overrides and _origin_of(raw, ("solver", "params", key)).override):
            del params[key]


def _merge_into(base: dict[str, Any], top: Mapping[str, Any]) -> None:
    """Deep-merge ``top`` into ``base``: mappings merge, everything else (lists too) replaces."""
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge_into(base[key], value)
        else:
            base[key] = value


def _from_mapping(mapping: Mapping[str, Any], source: str) -> _Raw:
    """A plain protocol mapping as a raw protocol (no lines to name)."""
    try:
        text = yaml.dump(dict(mapping), Dumper=_Dumper)
    except (yaml.YAMLError, TypeError, ValueError) as exc:
        raise InputError(source, None, f"not plain protocol data: {exc}") from None
    data, raw = _parse_yaml(text, _Origin(source, None, Path.cwd()))
    return _Raw(data, raw.origins)


def _apply(raw: _Raw, overrides: Sequence[str]) -> _Raw:
    """A copy of ``raw`` with ``KEY=VALUE`` overrides applied (VALUE parsed as YAML)."""
    raw = _Raw(copy.deepcopy(raw.data), dict(raw.origins))
    for item in [overrides] if isinstance(overrides, str) else overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        parts = tuple(key.split("."))
        if not sep or not all(parts):
            raise InputError(f"--set {item}", None,
                             "expected KEY=VALUE with a dotted KEY, e.g. solver.params.weight=1e-3")
        if parts[0] == "extends":
            raise InputError(f"--set {key}", None, "extends cannot be overridden; write a "
                                                   "protocol file that extends this one")
        origin = _Origin(f"--set {key}", None, Path.cwd(), override=key)
        value, _ = _parse_yaml(text, origin, prefix=parts)
        before = _solver_name(raw.data)
        node = raw.data
        for i, part in enumerate(parts[:-1]):
            if node.get(part) is None:
                node[part] = {}
                raw.origins[parts[:i + 1]] = origin
            elif not isinstance(node[part], dict):
                raise InputError(f"--set {key}", None, f"{'.'.join(parts[:i + 1])} is "
                                                       f"{_show(node[part])}, not a mapping")
            node = node[part]
        node[parts[-1]] = value
        for path in [p for p in raw.origins if p[:len(parts)] == parts]:
            del raw.origins[path]
        raw.origins[parts] = origin
        if parts[0] == "solver" and len(parts) <= 2 and _solver_name(raw.data) != before:
            _drop_params(raw, keep_overrides=True)  # parameters belong to their method
    return raw


# -- validation -------------------------------------------------------------------------------
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
           "less_than_equal": "<="}


def _model_at(model: type[BaseModel], path: Key) -> type[BaseModel] | None:
    for part in path:
        info = model.model_fields.get(part) if isinstance(part, str) else None
        if info is None or not (isinstance(info.annotation, type)
                                and issubclass(info.annotation, BaseModel)):
            return None
        model = info.annotation
    return model


def _problem(error: Mapping[str, Any], model: type[BaseModel], what: str = "") -> str:
    """One pydantic error (location relative to ``model``) in the words of this module."""
    kind, value, ctx, loc = error["type"], error.get("input"), error.get("ctx", {}), error["loc"]
    parent = _model_at(model, loc[:-1])
    info = parent.model_fields.get(loc[-1]) if parent is not None and loc else None
    bounds = "".join(f" {sign} {getattr(m, attr)}" for m in (info.metadata if info else ())
                     for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
                     if getattr(m, attr, None) is not None)
    if kind == "extra_forbidden" and parent is not None:
        keys = [*parent.model_fields, *(["extends"] if parent is Protocol else [])]
        return f"unknown key{what}; expected " + (f"one of {', '.join(keys)}" if keys else "none")
    if kind in _BOUNDS:
        bound, shown = (f"{v:g}" if isinstance(v, float) else v for v in (*ctx.values(), value))
        return f"must be {_BOUNDS[kind]} {bound}, got {shown}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx["expected"]) or [ctx["expected"]]
        expected = choices[0] if len(choices) == 1 else f"one of {', '.join(choices)}"
        return f"expected {expected}, got {_show(value)}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx["error"])
    expected = {"int": f"an integer{bounds}", "float": f"a number{bounds}",
                "bool": "true or false", "string": "a string", "dict": "a mapping",
                "model": "a mapping", "tuple": "a non-empty list", "too": "a non-empty list",
                "finite": "a finite number"}.get(kind.split("_")[0])
    return f"expected {expected or error['msg']}, got {_show(value)}"


def _raise(raw: _Raw, exc: ValidationError, model: type[BaseModel], prefix: Key = (),
           what: str = "") -> NoReturn:
    """Raise the InputError of the first error of ``exc`` (locations under ``prefix``)."""
    error = exc.errors(include_url=False)[0]
    loc = tuple(error["loc"])
    if error["type"] == "missing":
        _fail(raw, (*prefix, *loc), "required field is missing", missing_from=(*prefix,
                                                                                *loc[:-1]))
    first = str(error.get("ctx", {}).get("error", "")).split(" ")[0]
    if not loc and first in model.model_fields:  # a check of two fields names the first
        loc = (first,)
    _fail(raw, (*prefix, *loc), _problem({**error, "loc": loc}, model, what))


def _validate(raw: _Raw, source: Path | None) -> Protocol:
    """The typed protocol from a resolved raw protocol, or the InputError of its first flaw."""
    data = dict(raw.data)
    if "name" not in data and source is not None:
        data["name"] = source.stem
    for key in ("input", "acquisition", "outputs"):
        data[key] = {} if data.get(key) is None else data[key]
    if isinstance(data.get("solver"), dict) and data["solver"].get("params") is None:
        data["solver"] = {**data["solver"], "params": {}}
    try:
        protocol = Protocol.model_validate(data)
    except ValidationError as exc:
        _raise(raw, exc, Protocol)
    modality, name = protocol.modality, protocol.solver.name
    kind = protocol.input.kind or INPUT_KINDS[modality]
    if kind != INPUT_KINDS[modality]:
        _fail(raw, ("input", "kind"), f"a {modality} protocol reads {INPUT_KINDS[modality]}, "
                                      f"got {_show(kind)}")
    for key in ACQUISITION_KEYS["ct"] + ACQUISITION_KEYS["mri"]:
        if key not in ACQUISITION_KEYS[modality] and getattr(protocol.acquisition, key) is not None:
            other = "mri" if modality == "ct" else "ct"
            _fail(raw, ("acquisition", key), f"only for {other} protocols (this one is {modality}"
                  f"); expected one of {', '.join(ACQUISITION_KEYS[modality])}")
    record = METHODS[name]
    if modality not in record.modalities:
        _fail(raw, ("solver", "name"), f"{name} does not reconstruct {modality}; {modality} "
                                       f"solvers: {', '.join(names(modality))}")
    given = protocol.solver.params
    try:
        checked = record.parameters(modality, given)
    except ValidationError as exc:
        _raise(raw, exc, record.params, ("solver", "params"), f" for {name}")
    params = {key: None if given.get(key) is None else getattr(checked, key)
              for key in record.params.model_fields}
    prior = protocol.prior if protocol.prior == DEFAULT_PRIOR else _prior(raw, protocol.prior,
                                                                        record.needs_prior, name)
    protocol = protocol.model_copy(update={
        "input": protocol.input.model_copy(update={"kind": kind}), "prior": prior,
        "solver": protocol.solver.model_copy(update={"params": MappingProxyType(params)})})
    protocol._source, protocol._raw = source, raw
    return protocol


def _prior(raw: _Raw, prior: str, needed: bool, name: str) -> str:
    """A checkpoint reference (``PATH`` or ``KIND:PATH``) with its path checked and absolute."""
    if not needed:
        users = ", ".join(n for n, m in METHODS.items() if m.needs_prior)
        _fail(raw, ("prior",), f"{name} uses no prior; a prior is for {users} (leave it out or "
                               "write 'default')")
    kind, sep, target = prior.partition(":")
    if not (sep and kind in PRIOR_KINDS):
        kind, target = "", prior
    path = _origin_of(raw, ("prior",)).base / Path(target).expanduser()
    if path.suffix.lower() not in PRIOR_SUFFIXES:
        _fail(raw, ("prior",), "expected 'default' or a checkpoint file (.pt), perhaps as "
                               f"adm:PATH or ncsnpp:PATH, got {prior!r}")
    if not path.is_file():
        _fail(raw, ("prior",), f"no such checkpoint file {path}")
    return f"{kind}:{path.resolve()}" if kind else str(path.resolve())
