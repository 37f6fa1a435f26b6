"""Text corpus for the language-modelling batches: prepare.py writes it, TextCorpus reads it."""
from text_dataset_maker.corpus import TextCorpus

__all__ = ["TextCorpus"]
