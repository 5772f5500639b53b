"""Leaves the development-only modules out of the wheel the image installs.

pyproject.toml excludes the sandbox packages; single modules cannot be excluded there, so this build_py
drops the demo and the toy connector. Editable installs (`make venv`) map the whole source tree, so
`make demo` and the tests keep importing all of them from the checkout.
"""

from __future__ import annotations

from typing import Any

from setuptools import setup
from setuptools.command.build_py import build_py

DEV_ONLY_MODULES = frozenset({"connector.demo", "connector.service.testing_app"})


class BuildPyWithoutDevModules(build_py):
    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        modules: list[tuple[str, str, str]] = super().find_package_modules(package, package_dir)
        return [m for m in modules if f"{m[0]}.{m[1]}" not in DEV_ONLY_MODULES]


def _cmdclass() -> dict[str, Any]:
    return {"build_py": BuildPyWithoutDevModules}


setup(cmdclass=_cmdclass())
