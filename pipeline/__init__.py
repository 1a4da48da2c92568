"""chex: chest X-ray foundation-model evaluation. Embed once, probe many.

`from pipeline import open_store` is the notebook entry point (pipeline/api.py); it loads on first use,
so importing `pipeline` (and starting `chex`) stays cheap.
"""

__version__ = "0.1.0"

__all__ = ["StoreView", "open_store"]


def __getattr__(name: str):
    if name in __all__:
        from pipeline import api

        return getattr(api, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
