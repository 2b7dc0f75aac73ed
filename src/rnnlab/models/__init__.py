"""Models built from the layers: language model and encoder-decoder (more to come: tagger,
forecaster)."""

from rnnlab.models.language_model import LanguageModel, LMConfig
from rnnlab.models.seq2seq import Seq2Seq, Seq2SeqConfig

__all__ = ["LMConfig", "LanguageModel", "Seq2Seq", "Seq2SeqConfig"]
