"""Files written whole or not at all: what every run folder, checkpoint and cache entry is written with.

A reader never sees a partly written file, also when several processes write the same path at
once (a shared cache): each writes a temporary file beside the target and renames it over the
target in one step. Files get the permissions `open` would give them (the umask's), so
a shared cache or run folder is readable by the other users.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what `open(path, "w")` gives a new file


def write_atomic(path: Path, payload: bytes) -> None:
    """Write `path` whole or not at all, also with other processes writing it at the same time.

    The file gets the permissions `open` would give it (a temporary file alone would be 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            try:
                tmp.write(payload)
                tmp.flush()
                os.fchmod(tmp.fileno(), _FILE_MODE)
            except BaseException:
                os.unlink(tmp.name)
                raise
    except OSError as error:  # a full disk, a file-size limit (also when closing): name the file, not the temporary
        raise OSError(error.errno, error.strerror, str(path)) from error
    try:
        os.replace(tmp.name, path)
    except BaseException:
        os.unlink(tmp.name)
        raise
