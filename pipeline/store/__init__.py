"""The feature store: a Zarr v3 store of last-layer tokens per image, with a completion ledger."""

from pipeline.store.layout import StoreLayout
from pipeline.store.reader import FeatureStore
from pipeline.store.writer import Item, StoreWriter, store_attrs

__all__ = ["FeatureStore", "Item", "StoreLayout", "StoreWriter", "store_attrs"]
