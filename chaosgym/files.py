"""Files written whole or not at all: every file chaosgym writes (run folders, checkpoints, cache
entries, GIFs, diagnostics' tables and figures) goes through `write_atomic`.

A reader never sees a partly written file, also when several processes write the same path at
once (a shared cache): each writes a temporary file beside the target and renames it over the
target in one step. A write that fails (a full disk) leaves the previous file as it was. A target
that is a symbolic link is refused: a link planted where an output will go (`ln -s ~/notes.txt
run/episode.gif`) must neither be followed nor silently replaced. New files get the permissions
`open` would give them (0666 less the umask at the time of the write), so a shared cache or run
folder is readable by the other users.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path


def refuse_link(path: Path) -> None:
    """Raise a one-line OSError naming `path` when it is a symbolic link (dangling or not)."""
    if os.path.islink(path):
        raise OSError(errno.ELOOP, "refusing to write through a symbolic link", str(path))


def _create_temporary(folder: Path) -> tuple[int, Path]:
    """A new, empty file in `folder` opened for writing. Its name starts with "tmp" (what a run
    folder tolerates as a leftover of a kill). `os.open` creates it with 0666 less the current umask."""
    while True:
        path = folder / f"tmp{secrets.token_hex(6)}"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), path
        except FileExistsError:
            continue


def write_atomic(path: Path, payload: bytes) -> None:
    """Write `path` whole or not at all, also with other processes writing it at the same time.

    Refuses a `path` that is a symbolic link (OSError naming it, nothing written). An error while
    writing (a full disk, a file-size limit) names `path`, not the temporary file, and leaves the
    previous `path` intact.
    """
    path = Path(path)
    refuse_link(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor, temporary = _create_temporary(path.parent)
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from error
    try:
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(payload)
        except OSError as error:  # a full disk, a file-size limit (also when closing): name the target
            raise OSError(error.errno, error.strerror, str(path)) from error
        refuse_link(path)  # a link planted while the payload was written
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
