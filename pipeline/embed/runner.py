"""The compute loop: batches in, last-layer tokens out, whole units handed to a background writer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from pipeline.backbone.interface import Backbone
from pipeline.device import autocast
from pipeline.store.ledger import Unit
from pipeline.store.writer import StoreWriter

log = logging.getLogger(__name__)
HEARTBEAT_S = 30.0


@dataclass
class RunStats:
    rows: int = 0
    units: int = 0
    seconds: float = 0.0


def embed_batches(
    model: Backbone,
    batches: Iterable[dict],
    units: dict[int, Unit],
    writer: StoreWriter,
    n_layers: int,
    device: torch.device,
    on_rows: Callable[[int], None] | None = None,
    max_pending_writes: int = 2,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> RunStats:
    """Run the backbone's tokens (`Backbone.tokens`) over batches {x, unit, row}; write each unit when complete.

    Writing (fp16/int8 conversion, compression, flush, done marker) runs on one background thread so the
    model never waits for the disk, with at most `max_pending_writes` units in flight. `transform` maps the
    full patch tokens (B, L, P, D) to the store's patch rows (pooled and/or projected, pipeline/store/projection.py).
    """
    stats = RunStats()
    start = time.perf_counter()
    buffers: dict[int, dict[str, torch.Tensor]] = {}
    filled: dict[int, int] = {}
    buffer_dtype = torch.float16 if writer.layout.dtype == "float16" else torch.float32  # the writer checks finiteness
    parts = writer.layout.parts
    futures: list[Future] = []
    beat = time.monotonic()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="chex-store-writer") as pool, torch.inference_mode():
        for batch in batches:
            x = batch["x"].to(device, non_blocking=True)
            with autocast(device):
                tokens = dict(zip(("cls", "patch", "registers"), model.tokens(x, n_layers), strict=True))
            if transform is not None:
                tokens["patch"] = transform(tokens["patch"].to("cpu", torch.float32))
            tokens = {p: tokens[p].to("cpu", buffer_dtype) for p in parts}
            for j, (u, r) in enumerate(zip(batch["unit"], batch["row"], strict=True)):
                if u not in buffers:
                    n = len(units[u].image_ids)
                    buffers[u] = {p: torch.empty((n, *writer.layout.token_shape(p)), dtype=buffer_dtype) for p in parts}
                    filled[u] = 0
                for p in parts:
                    buffers[u][p][r] = tokens[p][j]
                filled[u] += 1
                if filled[u] == len(units[u].image_ids):
                    while futures and (futures[0].done() or len(futures) >= max_pending_writes):
                        futures.pop(0).result()  # re-raises a failed write
                    futures.append(
                        pool.submit(writer.write_unit, units[u], buffers.pop(u), time.perf_counter() - start)
                    )
                    del filled[u]
                    stats.units += 1
            stats.rows += len(batch["unit"])
            if time.monotonic() - beat > HEARTBEAT_S:  # claims older than the ledger's timeout get taken over
                writer.ledger.heartbeat(units.values())
                beat = time.monotonic()
            if on_rows:
                on_rows(len(batch["unit"]))
        for f in futures:
            f.result()
    if buffers:
        raise RuntimeError(f"units {sorted(buffers)} received only part of their rows")
    stats.seconds = time.perf_counter() - start
    return stats
