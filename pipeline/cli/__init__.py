"""The `chex` command line: a thin layer over the library functions of each stage.

Each stage registers its commands on the shared typer `app` in its own module of this package; every
module here is imported, so adding a stage's commands means adding its module and nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil

from pipeline.cli.app import app

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "app":
        importlib.import_module(f"{__name__}.{_module.name}")


def main() -> None:
    """Entry point of the `chex` console script."""
    app()
