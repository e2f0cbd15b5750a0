"""Outputs that appear complete or not at all.

Every writer in medrecon writes to a temporary name beside the destination and
renames it into place only when the write finished; on any error the temporary
file or folder is removed and the destination is untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medrecon.errors import InputError


def _default_mode(folder: bool) -> int:
    """The permissions a plain ``open``/``mkdir`` would give under the current umask
    (``mkstemp``/``mkdtemp`` create private 0600/0700 entries)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def check_output_path(path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
    """Check that ``path`` can be written: its folder exists and it is not a folder
    (for a file) or a file (for a folder output). Raises :class:`InputError`."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(path, "output", f"folder {str(parent)!r} does not exist")
    if path.exists() and not overwrite:
        raise InputError(path, "output", "already exists")
    return path


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    >>> out = getfixture("tmp_path") / "out.txt"          # a temporary folder under pytest
    >>> with atomic_file(out) as tmp:
    ...     _ = tmp.write_text("done")
    >>> out.read_text(), sorted(p.name for p in out.parent.iterdir())
    ('done', ['out.txt'])
    """
    path = check_output_path(path)
    if path.is_dir():
        raise InputError(path, "output", "is a folder, expected a file name")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.",
                                    suffix=".tmp" + "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _default_mode(folder=False))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; move it to ``path`` on success.

    An existing folder at ``path`` is replaced only after the new one is complete.
    """
    path = check_output_path(path)
    if path.exists() and not path.is_dir():
        raise InputError(path, "output", "is a file, expected a folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _default_mode(folder=True))
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
