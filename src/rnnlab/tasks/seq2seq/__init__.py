"""Sequence to sequence: encoder-decoder training, exact-match scoring, decoding."""
