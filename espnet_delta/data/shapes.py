"""Shape files for ESPnet's batch samplers (``<utt> <length>`` per line).

ESPnet's asr.sh gets them from its collect-stats stage, which runs the whole model
over the data; for raw waveforms the speech shape is just the sample count, read
from the audio header here (by the reader feature extraction uses, so both refuse
the same wav.scp lines and files).
"""

from __future__ import annotations

from pathlib import Path

from espnet_delta.data.wav_scp import AudioReader, read_wav_scp
from espnet_delta.fileio import write_text_atomic


def speech_shape_lines(wav_scp: Path) -> list[str]:
    """``<utt> <samples>`` lines, sorted by utterance id."""
    reader = AudioReader(wav_scp)
    return [f"{item.utt} {reader.num_samples(item)}\n" for item in read_wav_scp(wav_scp)]


def write_speech_shape(wav_scp: Path, out: Path) -> Path:
    return write_text_atomic(out, "".join(speech_shape_lines(Path(wav_scp))))
