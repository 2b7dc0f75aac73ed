"""Models built from the layers: language model (more to come: seq2seq, tagger, forecaster)."""

from rnnlab.models.language_model import LanguageModel, LMConfig

__all__ = ["LMConfig", "LanguageModel"]
