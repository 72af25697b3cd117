"""The two import rules: the HTTP side never loads torch; the engine never loads the HTTP stack."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import serving.api
import serving.engine

HTTP_SIDE = ["serving.messages", "serving.client", "serving.config", "serving.launcher", "serving.sagemaker_local"] + [
    module.name for module in pkgutil.walk_packages(serving.api.__path__, "serving.api.")]
ENGINE_SIDE = [module.name for module in pkgutil.walk_packages(serving.engine.__path__, "serving.engine.")]


def loaded_after_import(modules: list[str], watched: list[str]) -> list[str]:
    """Import `modules` in a fresh interpreter and return which of `watched` got loaded."""
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(','.join(m for m in {watched!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return [name for name in result.stdout.strip().split(",") if name]


@pytest.mark.parametrize("module", HTTP_SIDE)
def test_http_side_never_imports_torch(module):
    assert loaded_after_import([module], ["torch", "transformers", "accelerate"]) == []


def test_engine_never_imports_the_http_stack():
    assert ENGINE_SIDE, "no engine modules found"
    assert loaded_after_import(ENGINE_SIDE, ["flask", "gevent", "gunicorn", "werkzeug"]) == []
