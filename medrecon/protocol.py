"""Site protocols: a typed, frozen YAML schema (version 1), validated once where it enters.

A protocol fixes how a site reconstructs one kind of study: the modality and the input
it expects, the acquisition it should match, the solver with its parameters, the prior
of a diffusion solver, the device and seed, and the outputs to write. It enters as a
YAML file (a shipped name such as ``ct-sparse-tv`` or a path), optionally extended from
another protocol (mappings merge, the child wins, lists are replaced, a changed solver
name drops the inherited solver parameters) and changed by ``--set KEY=VALUE`` overrides
(VALUE read as YAML: ``outputs.formats=[nifti,hdf5]``); every mistake ends with
one :class:`~medrecon.errors.InputError` naming the file, the dotted key and its line.
After that only the frozen dataclasses below, holding plain values, flow on.

>>> protocol = load_protocol("ct-sparse-tv", ["solver.params.iterations=50"])
>>> protocol.modality, protocol.solver.name, protocol.solver.params["iterations"]
('ct', 'tv', 50)

The schema (``null`` means "anything" for an acquisition field and "the solver's own
default" for a solver parameter)::

    version: 1                  # required
    name: ct-sparse-tv          # default: the file's stem (never inherited)
    description: "..."
    extends: ct-sparse-tv       # a shipped name, or a path relative to this file
    modality: ct                # required: ct | mri
    input: {kind: sinogram, pattern: "*.h5"}   # kind: sinogram (ct), kspace (mri)
    acquisition: {geometry: parallel, views: null}   # ct: geometry, views
    #            {trajectory: cartesian, coils: null, calibration: null}  # mri
    prior: default              # diffusion solvers: "default" or a checkpoint (.pt)
    solver: {name: tv, params: {iterations: null, weight: null}}   # see SOLVER_PARAMS
    device: cpu                 # cpu | cuda | auto
    seed: 0
    outputs: {formats: [nifti], naming: "{study}", figure: true, report: true}
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import yaml

from medrecon.errors import InputError

VERSION = 1
MODALITIES = ("ct", "mri")
INPUT_KINDS = {"ct": "sinogram", "mri": "kspace"}
ACQUISITION_KEYS = {"ct": ("geometry", "views"), "mri": ("trajectory", "coils", "calibration")}
GEOMETRIES = ("parallel", "fan")
TRAJECTORIES = ("cartesian", "radial", "spiral")
DEVICES = ("cpu", "cuda", "auto")
FORMATS = ("nifti", "dicom", "hdf5", "npy")
FBP_FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")
DIFFUSION_SOLVERS = ("dds", "rmpvi", "dps")
DEFAULT_PRIOR = "default"
PRIOR_SUFFIXES = (".pt", ".pth")
TOP_KEYS = ("version", "name", "description", "extends", "modality", "input", "acquisition",
            "prior", "solver", "device", "seed", "outputs")
MAX_NODES = 10_000  # a protocol is small; this stops alias bombs


# -- parameter checkers: value -> validated value, or _Invalid(problem) ---------------------
class _Invalid(Exception):
    """A value breaks its constraint; the message is the problem, without file or key."""


Checker = Callable[[Any], Any]


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"bool {str(value).lower()}"
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def _integer(minimum: int) -> Checker:
    """An int (not a bool) >= minimum, or None."""
    def check(value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected an integer >= {minimum}, got {_show(value)}")
        if value < minimum:
            raise _Invalid(f"must be >= {minimum}, got {value}")
        return value
    return check


def _real(*, above: float | None = None, at_least: float | None = None,
          at_most: float | None = None) -> Checker:
    """A finite float (ints accepted, bools not) within the bounds, or None."""
    bounds = " and ".join(b for b in (None if above is None else f"> {above:g}",
                                      None if at_least is None else f">= {at_least:g}",
                                      None if at_most is None else f"<= {at_most:g}") if b)

    def check(value: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"expected a number {bounds}, got {_show(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise _Invalid(f"must be finite, got {value}")
        if ((above is not None and not value > above)
                or (at_least is not None and value < at_least)
                or (at_most is not None and value > at_most)):
            raise _Invalid(f"must be {bounds}, got {value:g}")
        return value
    return check


def _choice(choices: Sequence[str]) -> Checker:
    """One of the strings, or None."""
    def check(value: Any) -> str | None:
        if value is None or value in choices and isinstance(value, str):
            return value
        raise _Invalid(f"expected one of {', '.join(choices)}, got {_show(value)}")
    return check


class SolverEntry(NamedTuple):
    """The modalities a solver reconstructs and the checker of each of its parameters."""

    modalities: tuple[str, ...]
    params: dict[str, Checker]


_CT, _MRI, _BOTH = ("ct",), ("mri",), ("ct", "mri")
_SIGMA = _real(above=0)

#: Every solver a protocol may name: modalities and parameters (None = solver's default).
SOLVER_PARAMS: dict[str, SolverEntry] = {
    "fbp": SolverEntry(_CT, {"filter": _choice(FBP_FILTERS)}),
    "cgls": SolverEntry(_CT, {"iterations": _integer(1)}),
    "sirt": SolverEntry(_CT, {"iterations": _integer(1)}),
    "zf": SolverEntry(_MRI, {}),
    "cgsense": SolverEntry(_MRI, {"iterations": _integer(1), "weight": _real(at_least=0)}),
    "l1wavelet": SolverEntry(_MRI, {"iterations": _integer(1), "weight": _real(at_least=0)}),
    "tv": SolverEntry(_BOTH, {"iterations": _integer(1), "weight": _real(above=0)}),
    "dds": SolverEntry(_BOTH, {"steps": _integer(1), "sigma_max": _SIGMA, "sigma_min": _SIGMA,
                               "eta": _real(at_least=0, at_most=1), "gamma": _real(above=0),
                               "cg_iter": _integer(1), "n_samples": _integer(1)}),
    "rmpvi": SolverEntry(_BOTH, {"steps": _integer(2), "inner_iter": _integer(1),
                                 "sigma_max": _SIGMA, "sigma_min": _SIGMA,
                                 "gamma": _real(above=0)}),
    "dps": SolverEntry(_BOTH, {"steps": _integer(1), "sigma_max": _SIGMA, "sigma_min": _SIGMA,
                               "zeta": _real(above=0), "n_samples": _integer(1)}),
}


# -- the typed protocol ------------------------------------------------------------------
@dataclass(frozen=True)
class InputSpec:
    """What the protocol reads: ``kind`` (sinogram | kspace) and the glob for folders."""

    kind: str
    pattern: str = "*.h5"


@dataclass(frozen=True)
class Acquisition:
    """Expectations checked against each input file; None accepts anything.

    CT uses ``geometry`` and ``views``; MRI ``trajectory``, ``coils`` and ``calibration``
    (the ESPIRiT calibration width; None picks it from the data).
    """

    geometry: str | None = None
    views: int | None = None
    trajectory: str | None = None
    coils: int | None = None
    calibration: int | None = None


@dataclass(frozen=True)
class SolverSpec:
    """A solver name and every one of its parameters (None = the solver's own default)."""

    name: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Outputs:
    """Formats to write, the file-name template (field ``{study}``), figure and report."""

    formats: tuple[str, ...] = ("nifti",)
    naming: str = "{study}"
    figure: bool = True
    report: bool = True

    def stem(self, study: str) -> str:
        """The output file stem of a study (the input file's stem).

        >>> Outputs(naming="{study}_tv").stem("knee01")
        'knee01_tv'
        """
        return self.naming.format(study=study)


@dataclass(frozen=True)
class _Origin:
    """Where a key was set: a file and line, or a ``--set`` override."""

    source: str
    line: int | None
    base: Path                     # relative paths set here are resolved against it
    override: str | None = None    # the dotted key of the --set that set it


@dataclass
class _Raw:
    """Parsed YAML (plain dicts, lists, scalars) and the origin of every dotted key."""

    data: dict[str, Any]
    origins: dict[str, _Origin]


@dataclass(frozen=True)
class Protocol:
    """A validated site protocol; build it with :func:`load_protocol`.

    >>> p = load_protocol("mri-cartesian-cgsense")
    >>> p.input.kind, p.acquisition.trajectory, len(p.hash)
    ('kspace', 'cartesian', 64)
    """

    version: int
    name: str
    description: str
    modality: str
    input: InputSpec
    acquisition: Acquisition
    prior: str
    solver: SolverSpec
    device: str
    seed: int
    outputs: Outputs
    source: Path | None = None
    _raw: _Raw | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The resolved protocol as plain data: after extends and overrides, defaults filled."""
        return {
            "version": self.version,
            "name": self.name,
            "description": self.description,
            "modality": self.modality,
            "input": {"kind": self.input.kind, "pattern": self.input.pattern},
            "acquisition": {key: getattr(self.acquisition, key)
                            for key in ACQUISITION_KEYS[self.modality]},
            "prior": self.prior,
            "solver": {"name": self.solver.name, "params": dict(self.solver.params)},
            "device": self.device,
            "seed": self.seed,
            "outputs": {"formats": list(self.outputs.formats), "naming": self.outputs.naming,
                        "figure": self.outputs.figure, "report": self.outputs.report},
        }

    @property
    def hash(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`to_dict`."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()


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

    >>> load_protocol("ct-sparse-fbp", ["solver.params.filter=hann"]).solver.params
    {'filter': 'hann'}
    """
    text = os.fspath(name_or_path)
    if _names_shipped(text, Path.cwd()):
        path = _shipped_path(text, text, None)
    else:
        path = Path(text)
    raw = _read_chain(path, ())
    return _validate(_apply(raw, overrides), path)


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
        source = raw_or_protocol.source
        raw = raw_or_protocol._raw
        if raw is None:
            raw = _from_mapping(raw_or_protocol.to_dict(), str(source or "<protocol>"))
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
    """The prior a protocol's solver needs: "default", a checkpoint path, or None.

    >>> [prior_reference(load_protocol(n)) for n in ("ct-sparse-dds", "ct-sparse-tv")]
    ['default', None]
    """
    return protocol.prior if protocol.solver.name in DIFFUSION_SOLVERS else None


# -- YAML with lines ----------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """The safe loader, reading ``1e-3`` as a float (YAML 1.2) rather than a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


class _Dumper(yaml.SafeDumper):
    """The safe dumper, writing lists in flow style: ``formats: [nifti, hdf5]``."""


_Dumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data,
                                                         flow_style=True))

_MAP_TAG, _SEQ_TAG = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _parse_yaml(text: str, origin: _Origin, prefix: str = "") -> tuple[Any, dict[str, _Origin]]:
    """Parse YAML text into plain values; the origin (line) of every key under ``prefix``."""
    loader = _Loader(text)
    origins: dict[str, _Origin] = {}
    budget = [MAX_NODES]

    def where(path: str, node: yaml.Node) -> None:
        if origin.override is None:
            origins[path] = _Origin(origin.source, node.start_mark.line + 1, origin.base)
        else:
            origins[path] = origin

    def fail(path: str, node: yaml.Node, problem: str) -> NoReturn:
        where(path, node)
        _fail(origins, path, problem)

    def plain(node: yaml.Node, path: str) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            fail(path, node, f"more than {MAX_NODES} values (aliases?); not a protocol")
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_object(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                fail(path, node, f"unsupported tag {node.tag}")
            items = []
            for i, item in enumerate(node.value):
                where(f"{path}[{i}]", item)
                items.append(plain(item, f"{path}[{i}]"))
            return items
        if node.tag != _MAP_TAG:
            fail(path, node, f"unsupported tag {node.tag}")
        mapping: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                fail(_join(path, "<<"), key_node,
                     "YAML merge keys (<<) are not supported; use extends")
            if not isinstance(key_node, yaml.ScalarNode):
                fail(path, key_node, "keys must be non-empty strings, got a collection")
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str) or not key:
                fail(_join(path, str(key)), key_node,
                     f"keys must be non-empty strings, got {_show(key)}")
            sub = _join(path, key)
            if key in mapping:
                fail(sub, key_node, f"duplicate key (first at line {first_line[key]})")
            first_line[key] = key_node.start_mark.line + 1
            where(sub, key_node)
            mapping[key] = plain(value_node, sub)
        return mapping

    try:
        node = loader.get_single_node()
        if node is None:
            return None, origins
        where(prefix, node)
        return plain(node, prefix), origins
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        if origin.override is not None:
            raise InputError(f"--set {origin.override}", None,
                             f"value is not valid YAML: {problem}") from None
        field_name = None if mark is None else f"line {mark.line + 1}"
        raise InputError(origin.source, field_name, f"not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise InputError(origin.source, None, f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def _origin_of(origins: Mapping[str, _Origin], path: str) -> _Origin:
    """The origin of ``path``, or of its nearest ancestor that has one."""
    while path not in origins and path:
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return origins[path]


def _fail(origins: Mapping[str, _Origin], path: str, problem: str) -> NoReturn:
    """Raise the InputError of ``path``: "FILE: KEY (line N): problem"."""
    origin = _origin_of(origins, path)
    if origin.override is not None:
        raise InputError(f"--set {origin.override}", None if path == origin.override else path,
                         problem)
    key = path or None
    if key and origin.line is not None:
        key = f"{path} (line {origin.line})"
    elif origin.line is not None and origin.line > 1:
        key = f"line {origin.line}"
    raise InputError(origin.source, key, problem)


def _missing(origins: Mapping[str, _Origin], parent: str, key: str) -> NoReturn:
    """Raise the InputError of a required ``key`` missing from the mapping at ``parent``."""
    origin = _origin_of(origins, parent)
    path = _join(parent, key)
    if origin.override is not None:
        raise InputError(f"--set {origin.override}", path, "required field is missing")
    where = f" from '{parent}' (line {origin.line})" if parent and origin.line else ""
    raise InputError(origin.source, path, f"required field is missing{where}")


# -- reading, extends, overrides -------------------------------------------------------------
def _names_shipped(text: str, base: Path) -> bool:
    return ("/" not in text and "\\" not in text and not text.endswith((".yaml", ".yml"))
            and not (base / text).exists())


def _shipped_path(name: str, source: str, field_name: str | None) -> Path:
    path = Path(str(resources.files("medrecon.protocols").joinpath(f"{name}.yaml")))
    if not path.is_file():
        raise InputError(source, field_name,
                         f"no protocol file {name!r} and no shipped protocol of that name; "
                         f"shipped: {', '.join(shipped_protocols())}")
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
    data, origins = _parse_yaml(text, origin)
    if data is None:
        raise InputError(path, None, "empty; a protocol is a YAML mapping (version: 1, ...)")
    if not isinstance(data, dict):
        raise InputError(path, None, f"not a YAML mapping (found {type(data).__name__}); "
                                     "a protocol starts with version: 1")
    origins[""] = origin
    return _Raw(data, origins)


def _read_chain(path: Path, chain: tuple[Path, ...]) -> _Raw:
    """Read a protocol file and every protocol it extends, merged (the child wins)."""
    return _expand(_read_file(path), path, chain)


def _expand(raw: _Raw, path: Path, chain: tuple[Path, ...]) -> _Raw:
    """Resolve ``extends`` of ``raw`` (read from ``path``): the parents' merge under it."""
    if "extends" not in raw.data:
        return raw
    value = raw.data.pop("extends")
    if not isinstance(value, str) or not value:
        _fail(raw.origins, "extends", "expected a shipped protocol name or a path, "
                                      f"got {_show(value)}")
    origin = raw.origins["extends"]
    source, key = origin.source, f"extends (line {origin.line})" if origin.line else "extends"
    if _names_shipped(value, path.parent):
        parent = _shipped_path(value, source, key)
    else:
        parent = Path(value).expanduser()
        parent = parent if parent.is_absolute() else path.parent / parent
    seen = (*chain, path.resolve())
    if parent.resolve() in seen:
        loop = [str(p) for p in seen[seen.index(parent.resolve()):]] + [str(parent.resolve())]
        raise InputError(source, key, f"extends makes a cycle: {' -> '.join(loop)}")
    if not parent.is_file():
        raise InputError(source, key, f"no such protocol file {parent}")
    base = _read_chain(parent, seen)
    base.data.pop("name", None)  # a name is never inherited
    if _solver_name(raw.data) not in (None, _solver_name(base.data)):
        _drop_params(base, keep_overrides=False)  # parameters belong to their solver
    _merge_into(base.data, raw.data, "", base.origins, raw.origins)
    base.origins[""] = raw.origins[""]
    return base


def _solver_name(data: Mapping[str, Any]) -> Any:
    solver = data.get("solver")
    return solver.get("name") if isinstance(solver, dict) else None


def _drop_params(raw: _Raw, *, keep_overrides: bool) -> None:
    """Forget the solver parameters (except those set by --set) when the solver changes."""
    solver = raw.data.get("solver")
    params = solver.get("params") if isinstance(solver, dict) else None
    if not isinstance(params, dict):
        return
    for key in list(params):
        origin = _origin_of(raw.origins, f"solver.params.{key}")
        if not (keep_overrides and origin.override is not None):
            del params[key]
            _replace(raw.origins, f"solver.params.{key}", {})


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


def _replace(origins: dict[str, _Origin], path: str, new: Mapping[str, _Origin]) -> None:
    for old in [p for p in origins if _under(p, path)]:
        del origins[old]
    origins.update({p: o for p, o in new.items() if _under(p, path)})


def _merge_into(base: dict[str, Any], top: Mapping[str, Any], path: str,
                origins: dict[str, _Origin], top_origins: Mapping[str, _Origin]) -> None:
    """Deep-merge ``top`` into ``base``: mappings merge, everything else (lists too) replaces."""
    for key, value in top.items():
        sub = _join(path, key)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            origins[sub] = top_origins[sub]
            _merge_into(base[key], value, sub, origins, top_origins)
        else:
            base[key] = value
            _replace(origins, sub, top_origins)


def _from_mapping(mapping: Mapping[str, Any], source: str) -> _Raw:
    """A plain protocol mapping as a raw protocol (no lines to name)."""
    origin = _Origin(source, None, Path.cwd())
    origins = {"": origin}

    def walk(value: Any, path: str) -> Any:
        origins[path] = origin
        if isinstance(value, Mapping):
            for key in value:
                if not isinstance(key, str) or not key:
                    _fail(origins, path, f"keys must be non-empty strings, got {_show(key)}")
            return {key: walk(item, _join(path, key)) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return value

    data = walk(mapping, "")
    if not isinstance(data, dict):
        raise InputError(source, None, "a protocol is a mapping")
    return _Raw(data, origins)


def _apply(raw: _Raw, overrides: Sequence[str]) -> _Raw:
    """A copy of ``raw`` with ``KEY=VALUE`` overrides applied (VALUE parsed as YAML)."""
    if isinstance(overrides, str):
        overrides = [overrides]
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not all(parts):
            raise InputError(f"--set {item}", None,
                             "expected KEY=VALUE with a dotted KEY, e.g. solver.params.weight=1e-3")
        if parts[0] == "extends":
            raise InputError(f"--set {key}", None, "extends cannot be overridden; write a "
                                                   "protocol file that extends this one")
        origin = _Origin(f"--set {key}", None, Path.cwd(), override=key)
        value, value_origins = _parse_yaml(text, origin, prefix=key)
        before = _solver_name(raw.data)
        node = raw.data
        for i, part in enumerate(parts[:-1]):
            sub = ".".join(parts[:i + 1])
            if node.get(part) is None:
                node[part] = {}
                raw.origins[sub] = origin
            elif not isinstance(node[part], dict):
                raise InputError(f"--set {key}", None,
                                 f"{sub} is {_show(node[part])}, not a mapping")
            node = node[part]
        node[parts[-1]] = value
        value_origins[key] = origin
        _replace(raw.origins, key, value_origins)
        if key in ("solver", "solver.name") and _solver_name(raw.data) != before:
            _drop_params(raw, keep_overrides=True)  # parameters belong to their solver
    return raw


# -- validation -------------------------------------------------------------------------------
def _validate(raw: _Raw, source: Path | None) -> Protocol:
    """The typed protocol from a resolved raw protocol, or the InputError of its first flaw."""
    data, origins = raw.data, raw.origins

    def fail(path: str, problem: str) -> NoReturn:
        _fail(origins, path, problem)

    def section(value: Any, path: str, keys: Sequence[str], required: Sequence[str] = (),
                what: str = "") -> dict[str, Any]:
        """A mapping (None = empty) with only ``keys`` and every one of ``required``."""
        if value is None:
            value = {}
        if not isinstance(value, dict):
            fail(path, f"expected a mapping, got {_show(value)}")
        for key in value:
            if key not in keys:
                expected = f"expected one of {', '.join(keys)}" if keys else "expected none"
                fail(_join(path, key), f"unknown key{what}; {expected}")
        for key in required:
            if key not in value:
                _missing(origins, path, key)
        return value

    def check(path: str, value: Any, checker: Checker) -> Any:
        try:
            return checker(value)
        except _Invalid as exc:
            fail(path, str(exc))

    def text(path: str, value: Any, *, empty: bool = False) -> str:
        if not isinstance(value, str) or (not empty and not value.strip()):
            fail(path, f"expected a{'' if empty else ' non-empty'} string, got {_show(value)}")
        return value

    def boolean(path: str, value: Any) -> bool:
        if not isinstance(value, bool):
            fail(path, f"expected true or false, got {_show(value)}")
        return value

    top = section(data, "", TOP_KEYS, required=("version", "modality", "solver"))
    version = top["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version != VERSION:
        fail("version", f"expected {VERSION} (the only schema version), got {_show(version)}")
    modality = check("modality", top["modality"], _choice(MODALITIES))
    if modality is None:
        fail("modality", f"expected one of {', '.join(MODALITIES)}, got null")
    if "name" in top:
        name = text("name", top["name"])
    elif source is not None:
        name = source.stem
    else:
        _missing(origins, "", "name")
    description = text("description", top.get("description", ""), empty=True)

    # input
    inp = section(top.get("input"), "input", ("kind", "pattern"))
    kind = inp.get("kind", INPUT_KINDS[modality])
    if kind != INPUT_KINDS[modality]:
        fail("input.kind", f"a {modality} protocol reads {INPUT_KINDS[modality]}, "
                           f"got {_show(kind)}")
    pattern = text("input.pattern", inp.get("pattern", "*.h5"))
    if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
        fail("input.pattern", "a glob inside the input folder: no absolute path, no '..'")

    # acquisition
    acq = section(top.get("acquisition"), "acquisition",
                  ACQUISITION_KEYS["ct"] + ACQUISITION_KEYS["mri"])
    for key, value in acq.items():
        if key not in ACQUISITION_KEYS[modality] and value is not None:
            other = "mri" if modality == "ct" else "ct"
            fail(f"acquisition.{key}", f"only for {other} protocols (this one is {modality}); "
                                       f"expected one of {', '.join(ACQUISITION_KEYS[modality])}")
    checkers = {"geometry": _choice(GEOMETRIES), "views": _integer(1),
                "trajectory": _choice(TRAJECTORIES), "coils": _integer(1),
                "calibration": _integer(6)}
    acquisition = Acquisition(**{key: check(f"acquisition.{key}", acq.get(key), checkers[key])
                                 for key in ACQUISITION_KEYS[modality]})

    # solver
    sol = section(top["solver"], "solver", ("name", "params"), required=("name",))
    solver_name = sol["name"]
    if not isinstance(solver_name, str) or solver_name not in SOLVER_PARAMS:
        fail("solver.name", f"expected one of {', '.join(SOLVER_PARAMS)}, "
                            f"got {_show(solver_name)}")
    entry = SOLVER_PARAMS[solver_name]
    if modality not in entry.modalities:
        usable = [n for n, e in SOLVER_PARAMS.items() if modality in e.modalities]
        fail("solver.name", f"{solver_name} does not reconstruct {modality}; "
                            f"{modality} solvers: {', '.join(usable)}")
    given = section(sol.get("params"), "solver.params", tuple(entry.params),
                    what=f" for {solver_name}")
    params = {key: check(f"solver.params.{key}", given.get(key), checker)
              for key, checker in entry.params.items()}
    low, high = params.get("sigma_min"), params.get("sigma_max")
    if low is not None and high is not None and not low < high:
        fail("solver.params.sigma_min", f"must be below sigma_max ({high:g}), got {low:g}")

    # prior
    prior = top.get("prior", DEFAULT_PRIOR)
    if not isinstance(prior, str) or not prior.strip():
        fail("prior", f"expected 'default' or a checkpoint path (.pt), got {_show(prior)}")
    if prior != DEFAULT_PRIOR:
        if solver_name not in DIFFUSION_SOLVERS:
            fail("prior", f"{solver_name} uses no prior; a prior is for "
                          f"{', '.join(DIFFUSION_SOLVERS)} (leave it out or write 'default')")
        path = Path(prior).expanduser()
        if not path.is_absolute():
            path = _origin_of(origins, "prior").base / path
        if path.suffix.lower() not in PRIOR_SUFFIXES:
            fail("prior", f"expected 'default' or a checkpoint file (.pt), got {prior!r}")
        if not path.is_file():
            fail("prior", f"no such checkpoint file {path}")
        prior = str(path.resolve())

    # device, seed
    device = check("device", top.get("device", "cpu"), _choice(DEVICES))
    if device is None:
        fail("device", f"expected one of {', '.join(DEVICES)}, got null")
    seed = top.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 64:
        fail("seed", f"expected an integer >= 0 (below 2**64), got {_show(seed)}")

    # outputs
    out = section(top.get("outputs"), "outputs", ("formats", "naming", "figure", "report"))
    formats = out.get("formats", ["nifti"])
    if not isinstance(formats, list) or not formats:
        fail("outputs.formats", f"expected a non-empty list of {', '.join(FORMATS)}, "
                                f"e.g. [nifti], got {_show(formats)}")
    for i, fmt in enumerate(formats):
        check(f"outputs.formats[{i}]", fmt, _choice(FORMATS))
        if fmt is None:
            fail(f"outputs.formats[{i}]", f"expected one of {', '.join(FORMATS)}, got null")
        if fmt in formats[:i]:
            fail(f"outputs.formats[{i}]", f"{fmt} is listed twice")
    naming = _naming(text("outputs.naming", out.get("naming", "{study}")),
                     lambda problem: fail("outputs.naming", problem))
    outputs = Outputs(formats=tuple(formats), naming=naming,
                      figure=boolean("outputs.figure", out.get("figure", True)),
                      report=boolean("outputs.report", out.get("report", True)))

    return Protocol(version=VERSION, name=name, description=description, modality=modality,
                    input=InputSpec(kind=kind, pattern=pattern), acquisition=acquisition,
                    prior=prior, solver=SolverSpec(solver_name, params), device=device,
                    seed=seed, outputs=outputs, source=source, _raw=raw)


def _naming(template: str, fail: Callable[[str], NoReturn]) -> str:
    """Check an output name template: the field {study} and no folder separators."""
    if "/" in template or "\\" in template:
        fail("a file name, without '/'")
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion
                  in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        fail(f"not a valid template ({exc}); write e.g. '{{study}}_tv'")
    for name, spec, conversion in fields:
        if name != "study" or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + \
                (f":{spec}" if spec else "") + "}"
            fail(f"only the field {{study}} is allowed, got {shown}")
    if not fields:
        fail("must contain {study} (the input file's stem), or studies overwrite each other")
    if template.format(study="x").strip(".") == "":
        fail("not a usable file name")
    return template
