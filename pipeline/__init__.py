"""chex: chest X-ray foundation-model evaluation. Embed once, probe many."""

__version__ = "0.1.0"
