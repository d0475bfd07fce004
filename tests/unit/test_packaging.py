"""Every package folder is listed in pyproject.toml, and every listed package exists.

The import names are ``kassad.<folder>``; setuptools' ``packages`` is an explicit list, so a new
folder that is not added there is silently left out of the wheel.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("daemon", "drivers", "simulators", "systemd")


def _setuptools() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]


def _packages_on_disk() -> set[str]:
    found = set()
    for top in TOP_LEVEL:
        for init in (ROOT / top).rglob("__init__.py"):
            folder = init.parent.relative_to(ROOT)
            if any(part == "__pycache__" or part.startswith(".") for part in folder.parts):
                continue
            found.add("kassad." + ".".join(folder.parts))
    return found


def test_package_dir_maps_the_top_level_folders():
    package_dir = _setuptools()["package-dir"]
    assert package_dir == {f"kassad.{top}": top for top in TOP_LEVEL}


def test_every_package_folder_is_listed():
    listed = set(_setuptools()["packages"])
    missing = _packages_on_disk() - listed
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_every_listed_package_exists():
    listed = set(_setuptools()["packages"])
    absent = listed - _packages_on_disk()
    assert not absent, f"listed in pyproject.toml but no folder with __init__.py: {sorted(absent)}"


def test_packages_are_listed_once():
    packages = _setuptools()["packages"]
    assert len(packages) == len(set(packages))


def test_the_top_level_packages_are_found():
    assert {f"kassad.{top}" for top in TOP_LEVEL} <= _packages_on_disk()
