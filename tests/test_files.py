"""`chaosgym.files.write_atomic`, what every output of the package is written with: whole or not at
all, never through a symbolic link, with the permissions the umask gives at the time of the write."""

import errno
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from chaosgym import files
from chaosgym.files import write_atomic


@pytest.mark.parametrize("dangling", [False, True])
def test_a_link_in_place_of_the_target_is_refused_and_nothing_is_written(tmp_path, dangling):
    important = tmp_path / "important.txt"
    if not dangling:
        important.write_text("keep me")
    link = tmp_path / "episode.gif"
    link.symlink_to(important)
    with pytest.raises(OSError) as error:
        write_atomic(link, b"GIF89a")
    assert error.value.errno == errno.ELOOP and error.value.filename == str(link)
    assert "\n" not in str(error.value) and "symbolic link" in str(error.value)
    assert link.is_symlink() and os.readlink(link) == str(important)
    assert important.read_text() == "keep me" if not dangling else not important.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["episode.gif"] + ([] if dangling else ["important.txt"]))


def test_the_umask_at_the_time_of_the_write_sets_the_permissions(tmp_path):
    previous = os.umask(0o077)
    try:
        write_atomic(tmp_path / "private.csv", b"a,b\n")
        os.umask(0o022)
        write_atomic(tmp_path / "shared.csv", b"a,b\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "private.csv").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "shared.csv").stat().st_mode) == 0o644


def test_a_failed_write_names_the_target_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "lyapunov.png"
    target.write_bytes(b"previous")

    class FullDisk:
        def __init__(self, descriptor, mode):
            os.close(descriptor)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, payload):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fdopen", FullDisk)
    with pytest.raises(OSError) as error:
        write_atomic(target, b"new figure")
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(target)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["lyapunov.png"]


def test_write_atomic_gives_the_permissions_open_gives(tmp_path):
    write_atomic(tmp_path / "f.bin", b"payload")
    (tmp_path / "reference").write_bytes(b"")
    assert (tmp_path / "f.bin").read_bytes() == b"payload"
    mode = stat.S_IMODE((tmp_path / "f.bin").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "reference").stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "reference"]  # no temporary file left


LIMITED = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    from chaosgym.files import write_atomic

    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
    target = Path(sys.argv[1]) / "checkpoint.npz"
    target.write_bytes(b"previous")
    try:
        write_atomic(target, bytes(5000))
    except OSError as error:
        print(error.filename)
        print(sorted(p.name for p in target.parent.iterdir()), target.read_bytes().decode())
""")

def test_a_write_that_hits_a_file_size_limit_names_the_file_and_keeps_the_previous_one(tmp_path):
    result = subprocess.run([sys.executable, "-c", LIMITED, str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    filename, left = result.stdout.splitlines()
    assert filename == str(tmp_path / "checkpoint.npz")
    assert left == "['checkpoint.npz'] previous"  # no temporary left, the previous content whole
