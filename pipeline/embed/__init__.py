"""The embed stage: a frozen backbone over every image once, last-layer tokens into the feature store."""

from pipeline.embed.model import BackboneSpec
from pipeline.embed.stage import EmbedOptions, StoreSummary, embed_dataset, embed_datasets, embed_inputs

__all__ = ["BackboneSpec", "EmbedOptions", "StoreSummary", "embed_dataset", "embed_datasets", "embed_inputs"]
