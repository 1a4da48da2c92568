"""Test-wide settings: nothing may reach for a model hub, and tests stay on CPU and small."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TIMM_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
