"""Site protocols: a typed, frozen YAML schema (version 1), validated once where it enters.

A protocol fixes how a site reconstructs one kind of study. It is a YAML file (a shipped
name such as ``ct-sparse-tv`` or a path), optionally extending another (mappings merge,
the child wins, lists are replaced, a changed solver drops the inherited parameters) and
changed by ``--set KEY=VALUE`` (VALUE read as YAML); every mistake is one
:class:`~medrecon.errors.InputError` naming the file, the dotted key and its line. Only
the frozen pydantic models below flow on. Method facts come from :mod:`medrecon.methods`.

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

YAML is read by PyYAML's safe composer and walked node by node (lines; no duplicate keys,
tags, merge keys or alias bombs); YAML 1.1 scalars (``yes`` is true) keep files' hashes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import string
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, NamedTuple, NoReturn, get_args

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, PrivateAttr, ValidationError

from medrecon.data.calibration import MIN_CALIBRATION, PREWHITEN
from medrecon.errors import InputError
from medrecon.methods import METHODS, MODALITIES, names

VERSION = 1
INPUT_KINDS = {"ct": "sinogram", "mri": "kspace"}
ACQUISITION_KEYS = {"ct": ("geometry", "views"), "mri": ("trajectory", "coils", "calibration")}
#: MRI processing options of ``acquisition`` and their defaults; left out of
#: :meth:`Protocol.to_dict` (and so of the hash) at their default, so that protocols
#: written before they existed keep their hash
ACQUISITION_OPTIONS = {"mri": {"compress": None, "prewhiten": "auto"}}
DEFAULT_PRIOR = "default"
PRIOR_KINDS = ("medrecon", "adm", "ncsnpp")  # as medrecon.priors.defaults.KINDS (no torch)
PRIOR_SUFFIXES = (".pt", ".pth")
MAX_NODES = 10_000  # a protocol is small; this stops alias bombs
_SIGNS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}  # pydantic's bounds (field and error)
_PROBLEMS = {  # pydantic's error types (by first word) in this module's words
    "greater": "must be {bound}, got {shown}", "less": "must be {bound}, got {shown}",
    "value": "{error}", "assertion": "{error}", "extra": "unknown key{what}; expected {keys}",
    **{k: f"expected {v}, got {{got}}" for k, v in {
        "int": "an integer{bounds}", "float": "a number{bounds}", "bool": "true or false",
        "string": "a string", "dict": "a mapping", "model": "a mapping", "literal": "{choices}",
        "tuple": "a non-empty list", "too": "a non-empty list", "finite": "a finite number",
        }.items()}}


def _show(value: object) -> str:
    if value is None or isinstance(value, bool):
        return "null" if value is None else f"bool {str(value).lower()}"
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def _must(ok: Any, problem: str) -> Any:  # a validator: ValueError(problem) unless ok(value)
    def check(value: Any) -> Any:
        if not ok(value):
            raise ValueError(problem.format(got=_show(value)))
        return value
    return check


def _dicom_template(template: str) -> str:  # a DICOM identity template: {study}, {sha256}
    try:
        fields = [f[1:] for f in string.Formatter().parse(template) if f[1] is not None]
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc}); write e.g. 'trial-4/{{study}}'") \
            from None
    for name, spec, conv in fields:
        if name not in ("study", "sha256") or spec or conv:
            raise ValueError(f"only the fields {{study}} and {{sha256}} are allowed, got "
                             f"{{{name}}}")
    return template


def _naming(template: str) -> str:  # an output name template: {study}, {method}, no folders
    if "/" in template or "\\" in template:
        raise ValueError("a file name, without '/'")
    try:
        fields = [f[1:] for f in string.Formatter().parse(template) if f[1] is not None]
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc}); write e.g. '{{study}}_tv'") from None
    for name, spec, conv in fields:
        if name not in ("study", "method") or spec or conv:
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"only the fields {{study}} and {{method}} are allowed, got {shown}")
    if "study" not in [name for name, _, _ in fields]:
        raise ValueError("must contain {study} (the input file's stem), "
                         "or studies overwrite each other")
    return template


Text = Annotated[str, AfterValidator(_must(str.strip, "expected a non-empty string, got {got}"))]


class _Model(BaseModel):
    model_config = {"extra": "forbid", "frozen": True, "strict": True}


class InputSpec(_Model):
    """What the protocol reads: ``kind`` (sinogram | kspace) and the glob for folders."""

    kind: Literal["sinogram", "kspace"] | None = Field(None, description="default: modality's")
    pattern: Annotated[Text, AfterValidator(_must(
        lambda glob: not Path(glob).is_absolute() and ".." not in Path(glob).parts,
        "a glob inside the input folder: no absolute path, no '..'"))] = "*.h5"


class Acquisition(_Model):
    """Expectations checked against each input file; None accepts anything.

    CT uses ``geometry`` and ``views``; MRI ``trajectory``, ``coils`` and ``calibration``
    (the coil calibration width, at least ``MIN_CALIBRATION``, the same limit as
    ``recon mri --calibration``; None picks it from the data).
    """

    geometry: Literal["parallel", "fan"] | None = None
    views: int | None = Field(None, ge=1)
    trajectory: Literal["cartesian", "radial", "spiral"] | None = None
    coils: int | None = Field(None, ge=1)
    calibration: int | None = Field(None, ge=MIN_CALIBRATION)
    compress: int | None = Field(None, ge=1, description="virtual coils; null: none")
    prewhiten: Literal[PREWHITEN] = Field(  # type: ignore[valid-type]
        "auto", description="with the noise scan: auto (when there is one), noise, off")


class SolverSpec(_Model):
    """A method's name and every one of its parameters (None = the method's default)."""

    name: Literal[names()]  # type: ignore[valid-type]
    params: Mapping[str, Any] = Field(default_factory=lambda: MappingProxyType({}),
                                      description="null: default")

    def __getstate__(self) -> dict[Any, Any]:  # a MappingProxyType does not pickle (Dask)
        state = super().__getstate__()
        return {**state, "__dict__": {**state["__dict__"], "params": dict(self.params)}}

    def __setstate__(self, state: dict[Any, Any]) -> None:
        fields = {**state["__dict__"], "params": MappingProxyType(state["__dict__"]["params"])}
        super().__setstate__({**state, "__dict__": fields})


class DicomIdentity(_Model):
    """The DICOM study of the outputs of a non-DICOM study (a DICOM-derived one keeps its
    source's): ``study`` is the key its Study and Frame of Reference UIDs derive from, a
    template with ``{study}`` (the study's name) and ``{sha256}`` (the input file's);
    empty: ``{sha256}``. ``patient_id`` (empty: a pseudonymous ID from the key) and
    ``patient_name`` may use ``{study}`` too (:func:`medrecon.outputs.study_identity`)."""

    study: Annotated[str, AfterValidator(_dicom_template)] = ""
    patient_id: Annotated[str, AfterValidator(_dicom_template)] = ""
    patient_name: Annotated[str, AfterValidator(_dicom_template)] = ""


class Outputs(_Model):
    """Formats to write, the file-name template (fields ``{study}``, ``{method}``), figure,
    report, and the DICOM study identity of non-DICOM studies (``dicom``)."""

    formats: Annotated[tuple[Literal["nifti", "dicom", "hdf5", "npy"], ...],
                       Field(min_length=1, strict=False)] = ("nifti",)
    naming: Annotated[Text, AfterValidator(_naming)] = "{study}"
    figure: bool = True
    report: bool = True
    dicom: DicomIdentity = DicomIdentity()

    def stem(self, study: str, method: str) -> str:
        """The output file stem of a study, named by ``{study}`` and the ``{method}`` that
        reconstructs it."""
        return self.naming.format(study=study, method=method)


class Protocol(_Model):
    """A validated site protocol; build it with :func:`load_protocol`."""

    version: Annotated[Literal[1], BeforeValidator(_must(
        lambda v: type(v) is int and v == VERSION,
        "expected 1 (the only schema version), got {got}"))]
    name: Text = Field(description="default: the file's stem")
    description: str = ""
    modality: Literal[MODALITIES]  # type: ignore[valid-type]
    input: InputSpec = InputSpec()
    acquisition: Acquisition = Acquisition()
    prior: Text = Field(DEFAULT_PRIOR, description="default, PATH.pt, adm:PATH, ncsnpp:PATH")
    solver: SolverSpec
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    seed: Annotated[int, Field(ge=0, lt=2**64), BeforeValidator(_must(
        lambda v: type(v) is int and 0 <= v < 2**64,
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
        given = data["acquisition"]
        data["acquisition"] = {k: given[k] for k in ACQUISITION_KEYS[self.modality]}
        data["acquisition"].update({k: given[k] for k, default in ACQUISITION_OPTIONS.get(
            self.modality, {}).items() if given[k] != default})
        data["outputs"]["formats"] = list(self.outputs.formats)
        if self.outputs.dicom == DicomIdentity():  # the default: protocols keep their hash
            del data["outputs"]["dicom"]
        solver = {"name": self.solver.name, "params": {  # nested models (adapt) as data
            k: v.model_dump() if isinstance(v, BaseModel) else v
            for k, v in self.solver.params.items()}}
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


def shipped_protocols() -> list[str]:
    """Names of the protocols shipped with medrecon, sorted."""
    folder = resources.files("medrecon.protocols")
    return sorted(p.name[:-len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_protocol(name_or_path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Protocol:
    """Load, resolve (extends, then ``--set`` overrides) and validate a protocol. A name
    without "/" and .yaml/.yml suffix that is no existing file is a shipped protocol."""
    text = os.fspath(name_or_path)
    path = _shipped(text, Path.cwd(), text, None) or Path(text)
    return _validate(_apply(_expand(_read_file(path), path, ()), overrides), path)


def apply_overrides(raw_or_protocol: Protocol | Mapping[str, Any],
                    overrides: Sequence[str]) -> Protocol:
    """Apply ``KEY=VALUE`` overrides (VALUE parsed as YAML) to a loaded protocol or a plain
    protocol mapping (its ``extends`` and relative ``prior`` resolved against the working
    folder) and validate the result."""
    if isinstance(raw_or_protocol, Protocol):
        return _validate(_apply(raw_or_protocol._raw, overrides), raw_or_protocol.source)
    try:
        text = yaml.dump(dict(raw_or_protocol), Dumper=_Dumper)
    except (yaml.YAMLError, TypeError, ValueError) as exc:
        raise InputError("<protocol>", None, f"not plain protocol data: {exc}") from None
    raw = _parse_yaml(text, _Origin("<protocol>", None, Path.cwd()))
    return _validate(_apply(_expand(raw, Path.cwd() / "<protocol>", ()), overrides), None)


def protocol_yaml(protocol: Protocol) -> str:
    """The resolved protocol as YAML, headed by comments with its source and hash (loading
    the text back gives the same :attr:`Protocol.hash`)."""
    source = "" if protocol.source is None else f", resolved from {protocol.source}"
    body = yaml.dump(protocol.to_dict(), Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     width=100)
    return f"# medrecon protocol {protocol.name}{source}\n# sha256: {protocol.hash}\n{body}"


def prior_reference(protocol: Protocol) -> str | None:
    """The prior a protocol's method needs ("default", a checkpoint, ``adm:PATH`` ...),
    or None for a method without a prior."""
    return protocol.prior if METHODS[protocol.solver.name].needs_prior else None


def protocol_json_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of a protocol file: each method's parameters apply
    under its ``solver.name``."""
    schema = Protocol.model_json_schema()
    schema["properties"]["extends"] = {"type": "string", "description": "a shipped protocol "
                                       "or a file in this file's folder; this file wins"}
    schema["required"] = [key for key in schema["required"] if key != "name"]
    params = {name: record.params.model_json_schema() for name, record in METHODS.items()}
    for one in params.values():  # nested models (DDS's adapt) refer to top-level $defs
        schema["$defs"].update(one.get("$defs", {}))
    schema["$defs"]["SolverSpec"]["allOf"] = [
        {"if": {"properties": {"name": {"const": name}}}, "then": {"properties": {"params": {
            "type": "object", "additionalProperties": False, "properties": {
                key: {"anyOf": [value, {"type": "null"}], "description": value.get(
                    "description", key)} for key, value in one.get("properties", {}).items()}}}}}
        for name, one in params.items()]
    return schema


# -- YAML with lines, and the errors they name ----------------------------------------------
Key = tuple[str | int, ...]  # a key's path, as pydantic's error locations: ("outputs", 0)
_Loader = type("_Loader", (yaml.SafeLoader,), {})  # reads 1e-3 as a float (YAML 1.2)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
    r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
_Dumper = type("_Dumper", (yaml.SafeDumper,), {})  # writes lists in flow style: [nifti, hdf5]
_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=True))


class _Origin(NamedTuple):  # where a key was set: a file and line, or the --set of `override`
    source: str
    line: int | None
    base: Path  # relative paths set here are resolved against it
    override: str | None = None


class _Raw(NamedTuple):  # parsed YAML (plain data) and where its keys were set (nearest wins)
    data: Any
    origins: dict[Key, _Origin]

    def origin(self, path: Key) -> _Origin:
        while path not in self.origins:
            path = path[:-1]
        return self.origins[path]

    def solver(self, key: str = "name") -> Any:
        solver = self.data.get("solver")
        return solver.get(key) if isinstance(solver, dict) else None

    def drop_params(self, *, keep_overrides: bool) -> None:
        params = self.solver("params")
        for key in list(params) if isinstance(params, dict) else ():
            if not (keep_overrides and self.origin(("solver", "params", key)).override):
                del params[key]

    def fail(self, path: Key, problem: str) -> NoReturn:  # "FILE: KEY (line N): problem"
        origin, key = self.origin(path), _dotted(path) or None
        if origin.line is not None and (key or origin.line > 1):
            key = f"{key} (line {origin.line})" if key else f"line {origin.line}"
        raise InputError(origin.source, None if key == origin.override else key, problem)

    def reject(self, exc: ValidationError, model: Any, prefix: Key = (),
               what: str = "") -> NoReturn:  # the first error of exc, in this module's words
        error = exc.errors(include_url=False)[0]
        kind, value, ctx, loc = error["type"], error.get("input"), error.get("ctx", {}), tuple(
            error["loc"])
        if kind == "missing":  # named with the line of the mapping it is missing from
            path = (*prefix, *loc)
            origin, key, within = self.origin(path[:-1]), _dotted(path), _dotted(path[:-1])
            within = f" from '{within}' (line {origin.line})" if within and origin.line else ""
            raise InputError(origin.source, None if key == origin.override else key,
                             f"required field is missing{within}")
        if not loc and (first := str(ctx.get("error", "")).split(" ")[0]) in model.model_fields:
            loc = (first,)  # a check of two fields names the first
        parent = model  # the model that holds loc[-1], if any
        for part in loc[:-1]:  # a model, or a model or None (DDS's adapt)
            kind_of = getattr(parent and parent.model_fields.get(part), "annotation", None)
            parent = next((t for t in (kind_of, *get_args(kind_of))
                           if isinstance(t, type) and issubclass(t, BaseModel)), None)
        info = parent.model_fields.get(loc[-1]) if parent is not None and loc else None
        keys = [*parent.model_fields, *["extends"] * (parent is Protocol)] if parent else []
        choices = re.findall(r"'([^']*)'", ctx.get("expected", "")) or [ctx.get("expected")]
        bounds = "".join(f" {_SIGNS[a]} {getattr(m, a)}" for m in (info.metadata if info else ())
                         for a in _SIGNS if getattr(m, a, None) is not None)
        g = [f"{v:g}" if isinstance(v, float) else v for v in (*ctx.values(), value)]
        self.fail((*prefix, *loc), _PROBLEMS.get(kind.split("_")[0], "expected {msg}, got {got}")
                  .format(got=_show(value), msg=error["msg"], error=ctx.get("error"), what=what,
                          bounds=bounds, shown=g[-1],
                          bound=" ".join(f"{_SIGNS.get(k)} {v}" for k, v in zip(ctx, g)),
                          keys=f"one of {', '.join(keys)}" if keys else "none",
                          choices=f"one of {', '.join(choices)}" if choices[1:] else choices[0]))


def _dotted(path: Key) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _parse_yaml(text: str, origin: _Origin, prefix: Key = ()) -> _Raw:
    raw, budget = _Raw(None, {prefix: origin}), [MAX_NODES]
    loader = None

    def at(path: Key, node: yaml.Node) -> Key:  # path, its line noted (in a file)
        if origin.line is not None:
            raw.origins[path] = origin._replace(line=node.start_mark.line + 1)
        return path

    def plain(node: yaml.Node, path: Key) -> Any:  # the data of node, checked
        budget[0] -= 1
        if budget[0] < 0:
            raw.fail(at(path, node), f"more than {MAX_NODES} values (aliases?); not a protocol")
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_object(node, deep=True)
        if node.tag not in ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"):
            raw.fail(at(path, node), f"unsupported tag {node.tag}")
        if isinstance(node, yaml.SequenceNode):
            return [plain(item, at((*path, i), item)) for i, item in enumerate(node.value)]
        mapping: dict[str, Any] = {}
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raw.fail(at((*path, "<<"), key_node),
                         "YAML merge keys (<<) are not supported; use extends")
            if not isinstance(key_node, yaml.ScalarNode):
                raw.fail(at(path, key_node), "keys must be non-empty strings, got a collection")
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str) or not key:
                raw.fail(at((*path, str(key)), key_node),
                         f"keys must be non-empty strings, got {_show(key)}")
            if key in mapping:
                raw.fail(at((*path, key), key_node), f"duplicate key (first at line {lines[key]})")
            lines[key] = key_node.start_mark.line + 1
            mapping[key] = plain(value_node, at((*path, key), key_node))
        return mapping

    try:
        loader = _Loader(text)  # inside: the reader refuses control characters at once
        node = loader.get_single_node()
        return raw._replace(data=None if node is None else plain(node, prefix))
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        # ValueError: a scalar PyYAML cannot construct (a date such as 2001-02-30);
        # RecursionError: nesting deeper than the composer's recursion allows
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = " ".join(str(p) for p in (getattr(exc, "context", None),
                                              getattr(exc, "problem", None)) if p)
        if isinstance(exc, RecursionError):
            problem = "nested too deeply"
        problem = problem or str(exc).splitlines()[0]
        if origin.override is not None:
            raise InputError(origin.source, None, f"value is not valid YAML: {problem}") from None
        raise InputError(origin.source, mark and f"line {mark.line + 1}",
                         f"not valid YAML: {problem}") from None
    finally:
        if loader is not None:
            loader.dispose()


# -- reading, extends, overrides, validation --------------------------------------------------
def _shipped(text: str, base: Path, source: str, key: str | None) -> Path | None:
    if "/" in text or "\\" in text or text.endswith((".yaml", ".yml")) or (base / text).exists():
        return None
    path = Path(str(resources.files("medrecon.protocols").joinpath(f"{text}.yaml")))
    if not path.is_file():
        raise InputError(source, key, f"no protocol file {text!r} and no shipped protocol of "
                                      f"that name; shipped: {', '.join(shipped_protocols())}")
    return path


def _read_file(path: Path) -> _Raw:
    if not path.exists() or path.is_dir():
        raise InputError(path, None, "is a folder, not a protocol file" if path.exists() else
                         "no such protocol file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(path, None, "not a text (UTF-8) file") from None
    except OSError as exc:
        raise InputError(path, None, f"cannot be read: {exc.strerror or exc}") from None
    raw = _parse_yaml(text, _Origin(str(path), 1, path.parent))
    if not isinstance(raw.data, dict):
        raise InputError(path, None, "empty; a protocol is a YAML mapping (version: 1, ...)"
                         if raw.data is None else f"not a YAML mapping (found "
                         f"{type(raw.data).__name__}); a protocol starts with version: 1")
    return raw


def _expand(raw: _Raw, path: Path, chain: tuple[Path, ...]) -> _Raw:  # the parents under raw
    if "extends" not in raw.data:
        return raw
    value = raw.data.pop("extends")
    if not isinstance(value, str) or not value:
        raw.fail(("extends",), f"expected a shipped protocol name or a path, got {_show(value)}")
    origin, folder = raw.origin(("extends",)), path.parent.resolve()
    source, key = origin.source, f"extends (line {origin.line})" if origin.line else "extends"
    parent = _shipped(value, path.parent, source, key)
    if parent is None and (Path(value).expanduser().is_absolute() or not (
            folder / value).resolve().is_relative_to(folder)):
        raise InputError(source, key, f"{value!r} is outside this protocol's folder {folder}; "
                                      "extend a shipped protocol or a file in that folder")
    parent, seen = parent or path.parent / value, (*chain, path.resolve())
    if parent.resolve() in seen:
        loop = [str(p) for p in seen[seen.index(parent.resolve()):]] + [str(parent.resolve())]
        raise InputError(source, key, f"extends makes a cycle: {' -> '.join(loop)}")
    if not parent.is_file():
        raise InputError(source, key, f"no such protocol file {parent}")
    base = _expand(_read_file(parent), parent, seen)
    base.data.pop("name", None)  # a name is never inherited
    if raw.solver() not in (None, base.solver()):
        base.drop_params(keep_overrides=False)

    def merge(into: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:  # lists replace too
        return {**into, **{k: merge(into[k], v) if isinstance(v, dict) and isinstance(
            into.get(k), dict) else v for k, v in top.items()}}

    return _Raw(merge(base.data, raw.data), {**base.origins, **raw.origins})


def _apply(raw: _Raw, overrides: Sequence[str]) -> _Raw:  # a copy, overridden
    raw = _Raw(copy.deepcopy(raw.data), dict(raw.origins))
    for item in [overrides] if isinstance(overrides, str) else overrides:
        key, sep, text = item.partition("=")
        parts = tuple((key := key.strip()).split("."))
        if not sep or not all(parts):
            raise InputError(f"--set {item}", None,
                             "expected KEY=VALUE with a dotted KEY, e.g. solver.params.weight=1e-3")
        if parts[0] == "extends":
            raise InputError(f"--set {key}", None, "extends cannot be overridden; write a "
                                                   "protocol file that extends this one")
        origin = _Origin(f"--set {key}", None, Path.cwd(), override=key)
        value, before, node = _parse_yaml(text, origin, parts).data, raw.solver(), raw.data
        for i, part in enumerate(parts[:-1]):
            if node.get(part) is None:
                node[part], raw.origins[parts[:i + 1]] = {}, origin
            elif not isinstance(node[part], dict):
                raise InputError(origin.source, None, f"{'.'.join(parts[:i + 1])} is "
                                                      f"{_show(node[part])}, not a mapping")
            node = node[part]
        node[parts[-1]] = value
        for path in [p for p in raw.origins if p[:len(parts)] == parts]:
            del raw.origins[path]
        raw.origins[parts] = origin
        if parts[0] == "solver" and len(parts) <= 2 and raw.solver() != before:
            raw.drop_params(keep_overrides=True)
    return raw


def _validate(raw: _Raw, source: Path | None) -> Protocol:
    data = {**raw.data, **{k: {} for k in ("input", "acquisition", "outputs")
                           if raw.data.get(k) is None}}
    if "name" not in data and source is not None:
        data["name"] = source.stem
    if isinstance(data.get("solver"), dict) and raw.solver("params") is None:
        data["solver"] = {**data["solver"], "params": {}}
    try:
        protocol = Protocol.model_validate(data)
    except ValidationError as exc:
        raw.reject(exc, Protocol)
    modality, name, prior = protocol.modality, protocol.solver.name, protocol.prior
    record, reads = METHODS[name], INPUT_KINDS[modality]
    if (kind := protocol.input.kind or reads) != reads:
        raw.fail(("input", "kind"), f"a {modality} protocol reads {reads}, got {_show(kind)}")
    other = "mri" if modality == "ct" else "ct"
    for key in [k for k in ACQUISITION_KEYS[other] if getattr(protocol.acquisition, k) is not None]:
        raw.fail(("acquisition", key), f"only for {other} protocols (this one is {modality}); "
                                       f"expected one of {', '.join(ACQUISITION_KEYS[modality])}")
    for key, default in ACQUISITION_OPTIONS.get(other, {}).items():
        if getattr(protocol.acquisition, key) != default:
            raw.fail(("acquisition", key), f"only for {other} protocols (this one is "
                                           f"{modality})")
    if modality not in record.modalities:
        raw.fail(("solver", "name"), f"{name} does not reconstruct {modality}; {modality} "
                                     f"solvers: {', '.join(names(modality))}")
    try:
        checked = record.parameters(modality, given := protocol.solver.params)
    except ValidationError as exc:
        raw.reject(exc, record.params, ("solver", "params"), f" for {name}")
    if prior != DEFAULT_PRIOR:  # a checkpoint (PATH or KIND:PATH), checked and made absolute
        if not record.needs_prior:
            raw.fail(("prior",), f"{name} uses no prior; a prior is for "
                                 f"{', '.join(n for n, m in METHODS.items() if m.needs_prior)} "
                                 "(leave it out or write 'default')")
        head, sep, target = prior.partition(":")
        head, target = (head + sep, target) if sep and head in PRIOR_KINDS else ("", prior)
        path = raw.origin(("prior",)).base / Path(target).expanduser()
        if path.suffix.lower() not in PRIOR_SUFFIXES:
            raw.fail(("prior",), "expected 'default' or a checkpoint file (.pt), perhaps as "
                                 f"adm:PATH or ncsnpp:PATH, got {prior!r}")
        if not path.is_file():
            raw.fail(("prior",), f"no such checkpoint file {path}")
        prior = f"{head}{path.resolve()}"
    params = {k: None if given.get(k) is None else getattr(checked, k)
              for k in record.params.model_fields}
    protocol = protocol.model_copy(update={
        "input": protocol.input.model_copy(update={"kind": kind}), "prior": prior,
        "solver": protocol.solver.model_copy(update={"params": MappingProxyType(params)})})
    protocol._source, protocol._raw = source, raw
    return protocol
