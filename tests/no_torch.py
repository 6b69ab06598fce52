"""Run a module or a script with torch (and torchvision) made unimportable: ``python -m tests.no_torch
MODULE ARGS...`` runs ``python -m MODULE ARGS...`` with a `sys.meta_path` finder that refuses them, so
a test proves that a path runs with onnxruntime and numpy only."""

from __future__ import annotations

import importlib.abc
import runpy
import sys

BLOCKED = ("torch", "torchvision", "captum")


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, ANN201
        if fullname.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{fullname} is blocked in this test (no torch on the line)")
        return None


def block() -> None:
    sys.meta_path.insert(0, Blocker())


if __name__ == "__main__":
    block()
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
