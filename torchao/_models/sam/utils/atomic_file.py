"""Write a file so that a concurrent reader sees either the old file or the whole new one."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", tmp: str | None = None) -> Iterator[str]:
    """Yield a temporary path beside ``path`` to write to (a file, or a folder the caller
    makes); on success rename it onto ``path`` (atomic on one file system). ``suffix`` ends
    the temporary name, for writers that add their own (``np.savez`` appends ``.npz``);
    ``tmp`` names it instead (a leftover of an interrupted run there is removed first). On
    error the temporary file or folder is removed."""
    tmp = tmp if tmp is not None else f"{os.fspath(path)}.tmp{os.getpid()}{suffix}"
    _remove(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
