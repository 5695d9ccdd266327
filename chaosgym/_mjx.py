"""MJX, imported with its notice about the optional Warp backend held back.

`from mujoco import mjx` prints "Failed to import warp: ..." to stdout where Warp is not installed
(the CPU install): it would land in piped tables and CSVs. chaosgym's modules import MJX from here.
"""

import contextlib
import io

_captured = io.StringIO()
with contextlib.redirect_stdout(_captured):
    from mujoco import mjx
_other = [line for line in _captured.getvalue().splitlines()
          if not line.startswith(("Failed to import warp", "Failed to import mujoco_warp"))]
if _other:
    print("\n".join(_other))

__all__ = ["mjx"]
