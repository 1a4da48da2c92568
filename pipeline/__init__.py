"""chex: chest X-ray foundation-model evaluation. Embed once, probe many.

`from pipeline import open_store` is the notebook entry point (pipeline/api.py); it loads on first use,
so importing `pipeline` (and starting `chex`) stays cheap.
"""

__version__ = "0.1.0"

from pipeline.lazy import lazy_exports

__all__ = ["StoreView", "open_store"]
__getattr__ = lazy_exports(__name__, {"StoreView": ".api", "open_store": ".api"})
