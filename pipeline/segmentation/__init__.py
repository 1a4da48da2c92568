"""Segmentation's library parts (issue 24): masks aligned with the model's input as training targets and the prior
(`targets`), and predictions scored at the mask's resolution within the crop the model saw (`score`). The
segmentation task kind (pipeline/tasks/segmentation.py) calls them; the probe's loop trains the heads."""
