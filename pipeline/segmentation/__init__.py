"""Segmentation on the cached patch tokens (issue 24): masks aligned with the model's input (`targets`), heads
trained with an lr sweep on val Dice and refitted on train+val (`fit`), and predictions scored at the mask's
resolution within the crop the model saw (`score`). The segmentation task kind calls these; they know nothing of
run folders."""
