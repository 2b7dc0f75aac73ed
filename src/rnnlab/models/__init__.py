"""Models built from the layers: language model, encoder-decoder, tagger, forecaster and the
sequence classifier (pooled softmax or per-frame CTC)."""

from rnnlab.models.classifier import ClassifierConfig, SequenceClassifier
from rnnlab.models.language_model import LanguageModel, LMConfig
from rnnlab.models.seq2seq import Seq2Seq, Seq2SeqConfig

__all__ = ["ClassifierConfig", "LMConfig", "LanguageModel", "Seq2Seq", "Seq2SeqConfig",
           "SequenceClassifier"]
