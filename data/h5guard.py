"""Reading untrusted HDF5 files: metadata checked before h5py reads any data.

Every reader of an HDF5 file (sinograms, fastMRI k-space, ``medrecon info``) goes
through these helpers, so that a corrupt or hostile file ends with one
:class:`~medrecon.errors.InputError` naming the file and the field instead of a
traceback, a ``MemoryError`` or a hang:

- :func:`open_hdf5`: any failure to open is "not a readable HDF5 file".
- :func:`item`: a dataset by name; a missing one, a group in its place, a broken
  soft link or an external link (never followed: it would read another file) is
  refused by name.
- :func:`check_size`: a dataset's declared shape and dtype are checked against
  :data:`MAX_DATASET_BYTES` (and the memory available) before it is read.
- :func:`attributes`: root attributes read one by one through the low-level API,
  at most :data:`MAX_ATTRIBUTES` of them and :data:`MAX_ATTRIBUTE_BYTES` each;
  text of any encoding becomes ``str`` (undecodable bytes replaced), never an error.
- :func:`guarded`: any exception h5py raises while reading (``OSError``,
  ``KeyError``, ``RuntimeError``, ``ValueError``, ``TypeError``...) becomes the
  one-line error.

What cannot be guarded in-process: HDF5's C library may still crash (segmentation
fault) or loop on corrupt internal structures that are only reached while data
are read (a variable-length string's heap entry, a chunk index); run untrusted
files in a child process to isolate that.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import h5py
import numpy as np

from medrecon.errors import InputError

#: most root attributes read from one file
MAX_ATTRIBUTES = 256
#: largest attribute value read (bytes of storage)
MAX_ATTRIBUTE_BYTES = 1 << 20
#: largest dataset (or dataset slice) read into memory at once
MAX_DATASET_BYTES = 8 << 30
#: most objects listed by :func:`walk`
MAX_OBJECTS = 1000

T = TypeVar("T")


def text(value: object) -> str:
    """``value`` as text: bytes decoded as UTF-8 (undecodable bytes replaced), strings
    with escaped surrogates (h5py's reading of invalid UTF-8) repaired."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return text(value.reshape(()).item())
    value = str(value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", errors="replace")
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def plain(value: object) -> object:
    """An attribute value as a plain Python value: text as ``str``, 0-d arrays and
    numpy scalars as numbers, arrays of text as lists of ``str``."""
    if isinstance(value, (bytes, str)):
        return text(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return [text(v) for v in value.ravel()] if value.ndim else text(value.item())
        return value.item() if value.ndim == 0 else value
    if isinstance(value, np.generic):
        return value.item()
    return value


def guarded(path: Path, field: str | None, read: Callable[[], T]) -> T:
    """``read()``, with any exception from h5py or numpy turned into :class:`InputError`."""
    try:
        return read()
    except InputError:
        raise
    except MemoryError:
        raise InputError(path, field, "too large to read into memory") from None
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError, ValueError...
        raise InputError(path, field, f"unreadable ({brief(exc)})") from None


def brief(exc: BaseException) -> str:
    """The first line of an exception's message (or its type), for a one-line error."""
    lines = text(str(exc)).strip().splitlines()
    return (lines[0][:200] if lines else "") or type(exc).__name__


def open_hdf5(path: Path) -> h5py.File:
    """``path`` opened read-only; refuses anything HDF5 cannot open."""
    if not path.is_file():
        raise InputError(path, None, "no such file")
    try:
        return h5py.File(path, "r")
    except Exception as exc:  # OSError mostly; corrupt superblocks give others
        raise InputError(path, None, f"not a readable HDF5 file ({brief(exc)})") from None


def item(f: h5py.Group, path: Path, name: str, *, required: bool = False,
         hint: str = "") -> h5py.Dataset | None:
    """The dataset ``name`` of ``f``, or ``None`` when absent and not ``required``.

    Refused by name: a group where a dataset belongs, a broken soft link, an external
    link (never followed), anything unreadable."""
    def lookup() -> object:
        link = f.get(name, getlink=True)
        if link is None:
            return None
        if isinstance(link, h5py.ExternalLink):
            raise InputError(path, name, "is an external link to another file (not followed)")
        try:
            return f[name]
        except KeyError as exc:
            if isinstance(link, h5py.SoftLink):
                raise InputError(path, name, f"is a broken link (to {text(link.path)})") from None
            raise InputError(path, name, f"unreadable ({brief(exc)})") from None

    found = guarded(path, name, lookup)
    if found is None:
        if required:
            raise InputError(path, name, "dataset missing" + (f" ({hint})" if hint else ""))
        return None
    if not isinstance(found, h5py.Dataset):
        raise InputError(path, name, f"is a {type(found).__name__.lower()}, expected a dataset")
    return found


def available_memory() -> int | None:
    """Bytes of memory available now (``None`` when unknown)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing or unsupported platform
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_limit() -> int:
    """The most bytes one read may take: :data:`MAX_DATASET_BYTES`, or half the
    available memory when that is less."""
    available = available_memory()
    return MAX_DATASET_BYTES if available is None else min(MAX_DATASET_BYTES, available // 2)


def check_size(path: Path, field: str, shape: Iterable[int], itemsize: int,
               what: str = "") -> None:
    """Refuse reading ``shape`` elements of ``itemsize`` bytes beyond :func:`memory_limit`."""
    count = 1
    for n in shape:
        count *= int(n)
    size = count * int(itemsize)
    limit = memory_limit()
    if size > limit:
        raise InputError(path, field, f"declares {what or 'a shape of'} {tuple(shape)} "
                         f"({size / 2**30:.3g} GiB), more than the {limit / 2**30:.3g} GiB "
                         "limit of one read")


def dataset_info(path: Path, dataset: h5py.Dataset) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of ``dataset`` (its metadata only), refused when unreadable."""
    name = dataset.name.lstrip("/") if dataset.name else "dataset"
    return guarded(path, name, lambda: (tuple(int(n) for n in dataset.shape), dataset.dtype))


def read_dataset(path: Path, dataset: h5py.Dataset, field: str,
                 selection: object = ()) -> np.ndarray:
    """``dataset[selection]`` after checking its declared size, as a numpy array."""
    shape, dtype = dataset_info(path, dataset)
    if selection == ():
        check_size(path, field, shape, max(dtype.itemsize, 1))
    else:
        check_size(path, field, shape[1:], max(dtype.itemsize, 1), "a slice of shape")
    return guarded(path, field, lambda: np.asarray(dataset[selection]))


def _attribute(oid: h5py.h5a.AttrID, path: Path, owner: h5py.Group, name: str | bytes
               ) -> object:
    space = oid.get_space()
    if space.get_simple_extent_type() == h5py.h5s.NULL:
        return None
    shape = oid.shape
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    itemsize = max(int(oid.get_type().get_size()), 1)
    if count * itemsize > MAX_ATTRIBUTE_BYTES or count > MAX_ATTRIBUTE_BYTES:
        raise InputError(path, text(name), f"attribute of shape {shape} is larger than "
                         f"{MAX_ATTRIBUTE_BYTES} bytes")
    return plain(owner.attrs[name])


def attributes(f: h5py.Group, path: Path, names: Iterable[str] | None = None
               ) -> dict[str, object]:
    """The attributes of ``f`` (only ``names`` when given) as plain values, read one by one
    with their count and sizes checked first; an unreadable one is refused by name."""
    owner = f
    def count() -> int:
        return int(h5py.h5a.get_num_attrs(owner.id))

    result: dict[str, object] = {}
    if names is not None:
        for name in names:
            key = name.encode()
            if not guarded(path, name, lambda k=key: h5py.h5a.exists(owner.id, k)):
                continue
            oid = guarded(path, name, lambda k=key: h5py.h5a.open(owner.id, k))
            result[name] = guarded(path, name, lambda o=oid, n=name: _attribute(o, path, owner, n))
        return result
    total = guarded(path, "attributes", count)
    if total > MAX_ATTRIBUTES:
        raise InputError(path, "attributes", f"{total} root attributes, more than the "
                         f"{MAX_ATTRIBUTES} medrecon reads")
    for index in range(total):
        oid = guarded(path, "attributes", lambda i=index: h5py.h5a.open(owner.id, index=i))
        raw = guarded(path, "attributes", lambda o=oid: o.name)
        name = text(raw)
        result[name] = guarded(path, name, lambda o=oid, n=raw: _attribute(o, path, owner, n))
    return result


def walk(f: h5py.Group, path: Path, limit: int = MAX_OBJECTS, depth: int = 8
         ) -> dict[str, str]:
    """``name -> "shape dtype"`` of the datasets in ``f`` (breadth first, links not
    followed, at most ``limit`` objects and ``depth`` levels); unreadable entries say so."""
    found: dict[str, str] = {}
    queue: list[tuple[str, h5py.Group, int]] = [("", f, 0)]
    seen = 0
    while queue:
        prefix, group, level = queue.pop(0)
        try:
            names = []
            gid = group.id
            for index in range(min(int(gid.get_num_objs()), limit - seen)):
                names.append(text(gid.get_objname_by_idx(index)))
        except Exception as exc:  # corrupt group index
            found[prefix or "/"] = f"unreadable group ({brief(exc)})"
            continue
        for name in names:
            seen += 1
            full = f"{prefix}/{name}" if prefix else name
            try:
                link = group.get(name, getlink=True)
                if not isinstance(link, h5py.HardLink):
                    found[full] = f"link ({type(link).__name__}, not followed)"
                    continue
                obj = group[name]
                if isinstance(obj, h5py.Dataset):
                    found[full] = f"{tuple(obj.shape)} {obj.dtype}"
                elif isinstance(obj, h5py.Group) and level + 1 < depth:
                    queue.append((full, obj, level + 1))
            except Exception as exc:  # a corrupt object header
                found[full] = f"unreadable ({brief(exc)})"
        if seen >= limit:
            found["..."] = f"more than {limit} objects, not listed"
            break
    return found
