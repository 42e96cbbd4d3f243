"""Write a file so that a concurrent reader sees either the old file or the whole new one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside ``path`` to write to; on success rename it onto ``path``
    (atomic on one file system). ``suffix`` ends the temporary name, for writers that add
    their own (``np.savez`` appends ``.npz``). On error the temporary file is removed."""
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
