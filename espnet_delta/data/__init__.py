"""Corpus preparation: MyST, LibriSpeech and the synthetic mini corpus -> Kaldi data dirs."""

from .kaldi_dir import DataDirError, Utterance, read_data_dir, validate_data_dir, write_data_dir
from .prepare import PrepConfig, prepare_data
from .text_norm import normalize_transcript

__all__ = [
    "DataDirError",
    "PrepConfig",
    "Utterance",
    "normalize_transcript",
    "prepare_data",
    "read_data_dir",
    "validate_data_dir",
    "write_data_dir",
]
