"""Which image a store row holds: rows are matched by content, not by image id alone.

A row's key is (image_id, view) plus the data set it was embedded for and its content key, the sha256 of the
decoded pixels (`pipeline.shard_format.pixel_digest`: recorded in each shard sample's json at `chex shard`, or
computed from the file for manifest inputs when needed). When a new item has the id (and view) of a row already
planned, `same_image` decides:

- both content keys known: equal means the same image (the row is reused, also by another data set, which the
  ledger records under `shared/`); different means other pixels under the same id, refused (`ContentConflict`).
- otherwise (a store or shards from before content keys, or manifest inputs): a row of the same data set and
  source file is reused by id as before; across data sets or source files both files are hashed when they can be
  read and compared; an image of another data set whose content cannot be verified is refused like a different
  one (the same data set's, e.g. read from a moved folder whose old files are gone, is reused as before).

Refused rather than embedded again: one store holds one row per (image_id, view), which every reader selects
by id. The message names the data sets and ids and says what to do (another store, or other ids).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.errors import StoreError

MAX_SHOWN = 5


@dataclass(frozen=True)
class RowKey:
    """What is known of one row (or item to plan): its data set, content key and source file ("": unknown)."""

    dataset: str = ""
    content: str = ""
    source: str = ""


@dataclass(frozen=True)
class ContentConflict:
    """An item whose id names another (or an unverifiable) image already in the store."""

    image_id: str
    dataset: str
    stored_dataset: str
    verified: bool  # True: both contents known and different; False: the stored row could not be checked


def same_image(old: RowKey, new: RowKey, digest: Callable[[str], str] | None = None) -> bool | None:
    """True: the same image; False: other pixels; None: cannot tell (see the module docstring)."""
    if old.content and new.content:
        return old.content == new.content
    same_set = not old.dataset or not new.dataset or old.dataset == new.dataset
    same_file = not old.source or not new.source or old.source == new.source
    if same_set and same_file:
        return True  # what a store without content keys always did: the same data set's row, by id
    a = old.content or (_safe(digest, old.source) if digest and old.source else "")
    b = new.content or (_safe(digest, new.source) if digest and new.source else "")
    if a and b:
        return a == b
    return True if same_set else None  # the same data set from a moved folder whose old files are gone: as before


def conflict_error(store: object, conflicts: Sequence[ContentConflict]) -> StoreError:
    """The StoreError that refuses items whose ids name other images in `store`, naming data sets and ids."""
    first = conflicts[0]
    sets = sorted({c.dataset or "?" for c in conflicts})
    shown = ", ".join(
        f"{c.image_id!r} ({c.dataset or '?'} vs stored {c.stored_dataset or '?'}"
        + ("" if c.verified else ", stored row unverifiable")
        + ")"
        for c in conflicts[:MAX_SHOWN]
    )
    differ = sum(c.verified for c in conflicts)
    unknown = len(conflicts) - differ
    why = " and ".join(
        text
        for n, text in ((differ, f"{differ} with pixels that differ from the stored image's"),
                        (unknown, f"{unknown} that cannot be compared (the stored row predates content keys)"))
        if n
    )  # fmt: skip
    stored = sorted({c.stored_dataset or "?" for c in conflicts})
    return StoreError(
        f"feature store {store}: {len(conflicts)} images of data set {', '.join(sets)} reuse the ids of other "
        f"images stored for data set {', '.join(stored)} ({why}), e.g. {shown}; nothing was embedded. A store "
        f"holds one image per id: embed {first.dataset or 'this data set'} into its own store (--backbone "
        "OTHER_NAME), or give its images ids that no other data set of this store uses"
        + (
            ". Identical images become comparable once both data sets' shards carry content keys: rerun `chex shard` "
            "for each (shards written before content keys lack them)"
            if unknown
            else ""
        )
    )


def _safe(digest: Callable[[str], str], source: str) -> str:
    try:
        return digest(source)
    except Exception:  # an unreadable or vanished file: the content stays unknown, and so unverifiable
        return ""
