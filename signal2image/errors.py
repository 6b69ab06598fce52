"""The one error type a user can fix, at the bottom of the dependency order so every package raises it,
and `require`, the import of an optional dependency that says how to install it.

`pipeline` (the CLI prints the message and exits with code 2) and `deploy` (the service answers 4xx)
catch it; `signal2image` and `models` raise it without importing either.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class UserError(Exception):
    """Bad configuration, arguments or input: the message names the field, the value and the fix."""


def install_hint(extra: str) -> str:
    """The command that installs the optional dependencies `extra` of this project (pyproject.toml)."""
    return f'pip install -e ".[{extra}]"'


def require(module: str | tuple[str, ...], extra: str | None, what: str, *, install: str = "") -> ModuleType:
    """Import an optional dependency, or say which install brings it.

    Args:
        module: the module to import, or alternatives (the first importable one is returned).
        extra: the pyproject extra that installs it (``serve``, ``elpv``, ``bench``), or None with `install`.
        what: the command or setting that needs it, e.g. ``pipeline serve``.
        install: the install command, when no extra brings the package.

    Raises:
        UserError: none of `module` imports; the message names `what`, the module and the install command.
    """
    names = (module,) if isinstance(module, str) else module
    failure: ImportError | None = None
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            failure = exc
    how = install or install_hint(extra or "")
    raise UserError(
        f"{what} needs the optional package {names[0]!r}, which is not installed ({failure}): {how}"
    )
