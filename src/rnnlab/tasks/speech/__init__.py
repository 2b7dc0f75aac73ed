"""Speech recognition on the training engine: isolated words and connected digits (CTC)."""
