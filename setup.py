"""Packaging is declared in pyproject.toml; this file only makes every build start from an empty build/lib.

setuptools copies the modules into build/lib and packs whatever is there, so a module removed from
the tree but still in a stale build/lib (left by an earlier build) would be shipped and installed.
"""

import shutil

from setuptools import setup
from setuptools.command.build_py import build_py


class CleanBuildPy(build_py):
    def run(self) -> None:
        shutil.rmtree(self.build_lib, ignore_errors=True)
        super().run()


setup(cmdclass={"build_py": CleanBuildPy})
