"""The public face of sono3d.heart: its names resolve, it stays light to import, presets take overrides."""

from __future__ import annotations

import subprocess
import sys

import pytest

import sono3d.heart as heart
from sono3d.errors import InputError


def test_every_public_name_resolves_to_its_module():
    assert "train" in heart.__all__ and "correspond_cohort" in heart.__all__ and "lv_volume_ml" in heart.__all__
    for name in heart.__all__:
        obj = getattr(heart, name)
        assert obj.__module__.startswith("sono3d.heart."), (name, obj.__module__)
        assert obj.__name__ == name
    assert set(heart.__all__) <= set(dir(heart))
    with pytest.raises(AttributeError, match="no_such_name"):
        heart.no_such_name  # noqa: B018


def test_package_and_cohort_import_without_torch_or_pyvista():
    # Spawned cohort workers import sono3d.heart.cohort: the package face must not load torch for them.
    code = ("import sys, sono3d.heart, sono3d.heart.cohort; "
            "print(sorted(m for m in ('torch', 'pyvista', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_presets_take_overrides():
    cfg = heart.TrainConfig.preset("tiny", epochs=2, workers=None)
    assert cfg.epochs == 2 and cfg.workers == heart.TrainConfig.preset("tiny").workers  # None keeps the preset's
    assert heart.NetConfig.preset("tiny", grid=2).grid == 2
    with pytest.raises(InputError, match="unknown training config"):
        heart.TrainConfig.preset("huge")
    with pytest.raises(TypeError):
        heart.NetConfig.preset("tiny", no_such_field=1)
