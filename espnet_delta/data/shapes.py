"""Shape files for ESPnet's batch samplers (``<utt> <length>`` per line).

ESPnet's asr.sh gets them from its collect-stats stage, which runs the whole model
over the data; for raw waveforms the speech shape is just the sample count, read
from the audio header here.
"""

from __future__ import annotations

from pathlib import Path

import soundfile

from espnet_delta.fileio import write_text_atomic


def speech_shape_lines(wav_scp: Path) -> list[str]:
    lines = []
    with open(wav_scp, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            utt, _, path = line.rstrip("\n").partition(" ")
            if not path or path.endswith("|"):
                raise ValueError(f"{wav_scp}:{lineno}: expected '<utt> <audio file>', got {line.strip()!r}")
            try:
                frames = soundfile.info(path).frames
            except Exception as e:  # soundfile raises several types
                raise ValueError(f"{wav_scp}:{lineno}: cannot read {path}: {e}") from e
            lines.append(f"{utt} {frames}\n")
    return lines


def write_speech_shape(wav_scp: Path, out: Path) -> Path:
    return write_text_atomic(out, "".join(speech_shape_lines(Path(wav_scp))))
