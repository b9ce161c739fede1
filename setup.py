"""Packages are found, not listed: every folder under the roots of `PACKAGE_DIR` is a package
of the wheel (a module folder with `__init__.py`, or a data folder such as `configs/`), so a
new subpackage ships without an edit here. Everything else is in pyproject.toml."""

from setuptools import find_namespace_packages, setup

#: import name -> folder: the core in src/, the role folders at the root (docs: DESIGN.md)
PACKAGE_DIR = {
    "blockfl": "src/blockfl",
    "blockfl.chain": "chain",
    "blockfl.devices": "devices",
    "blockfl.miners": "miners",
    "blockfl.contracts": "contracts",
}


def packages() -> list[str]:
    """Each root of `PACKAGE_DIR` and every folder below it, as import names."""
    found = []
    for name, folder in PACKAGE_DIR.items():
        found.append(name)
        found += [f"{name}.{sub}" for sub in find_namespace_packages(
            folder, exclude=["__pycache__", "*.__pycache__"])]
    return found


if __name__ == "__main__":  # pip runs it so; tests/test_packaging.py imports PACKAGE_DIR
    setup(package_dir=PACKAGE_DIR, packages=packages())
