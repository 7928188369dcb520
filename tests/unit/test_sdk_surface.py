"""`cohort.sdk` is the agent author's whole surface: its `__all__` resolves, its modules import on
their own, and none of them reaches into the server platform."""

from __future__ import annotations

import inspect
import pkgutil
import subprocess
import sys
import types

import pytest

import cohort.sdk as sdk

SDK_MODULES = sorted(info.name for info in pkgutil.walk_packages(sdk.__path__, "cohort.sdk."))


def fresh_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_public_name_resolves_to_an_sdk_definition():
    assert sorted(sdk._HOMES) == sorted(sdk.__all__)  # a name loaded lazily but not public, or the reverse
    for name in sdk.__all__:
        value = getattr(sdk, name)
        if isinstance(value, types.ModuleType):
            assert value.__name__ == f"cohort.sdk.{name}"
        elif inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__.startswith("cohort.sdk."), name
            assert value.__name__ == name


def test_star_import_binds_exactly_the_public_names():
    namespace: dict[str, object] = {}
    exec("from cohort.sdk import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(sdk.__all__)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        sdk.no_such_name  # noqa: B018


@pytest.mark.parametrize("module", SDK_MODULES)
def test_each_module_imports_first_in_a_fresh_interpreter(module):
    # The order that would expose an import cycle through the package's __init__.
    fresh_python(f"import {module}")


def test_the_sdk_imports_nothing_of_the_platform():
    loaded = fresh_python(
        "import importlib, sys\n"
        f"for name in {SDK_MODULES!r}: importlib.import_module(name)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    ).split()
    # The generated messages and domain errors.
    allowed = ("cohort.sdk", "cohort.api", "cohort.platform.errors")
    # The platform package itself is import-free, so loading it on the way to its errors loads nothing else.
    platform = [
        name
        for name in loaded
        if name.startswith("cohort.")
        and name != "cohort.platform"
        and not any(name == a or name.startswith(a + ".") for a in allowed)
    ]
    assert platform == []


def test_a_format_module_does_not_load_the_recorder_or_toolbench():
    loaded = fresh_python("import sys, cohort.sdk.trajectories.usage; print('\\n'.join(sys.modules))").split()
    assert "cohort.sdk.recorder" not in loaded
    assert "cohort.sdk.toolbench" not in loaded
