"""The sweep engine imports without VTK, PyVista or nibabel (a GPU machine may lack them).

Each check runs in a fresh interpreter whose import system refuses those packages, so a module that
imports one of them at the top (directly or through another sono3d module) fails here.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

BLOCKED = ("vtk", "vtkmodules", "pyvista", "nibabel")

_PROBE = """
import importlib.abc
import sys

BLOCKED = {blocked!r}


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked for this test")
        return None


sys.meta_path.insert(0, Refuse())
import {module}

loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
print("ok")
"""


@pytest.mark.parametrize("module", ["sono3d.sweep", "sono3d.sweep.raster", "sono3d.sweep.reconstruct",
                                    "sono3d.sweep.compound", "sono3d.sweep.export"])
def test_sweep_imports_without_vtk_pyvista_nibabel(module):
    code = _PROBE.format(blocked=BLOCKED, module=module)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_the_probe_does_block():
    """The refusing finder really refuses (otherwise the test above would prove nothing)."""
    code = _PROBE.format(blocked=BLOCKED, module="nibabel")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "blocked for this test" in res.stderr
