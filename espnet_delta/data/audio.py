"""Reading audio files: probing, decoding, resampling; the one place that calls soundfile.

Data preparation probes corpus audio (:func:`probe_audio`) and resamples it; feature
extraction, shape files and greedy decoding read data-dir audio through the same
functions (via :class:`espnet_delta.data.wav_scp.AudioReader` where a ``wav.scp``
line is known), so every reader treats unreadable, empty and length-less (FLAC
stream) files alike.

Every recipe in this project trains at 16 kHz mono.  Corpus audio at another
rate (or with several channels) is *resampled*, not refused: the converted
copy is written with ``sox`` under the preparation output directory (never
next to the corpus) and ``wav.scp`` points at it.  A Kaldi pipe entry
(``sox in.flac -r 16000 -t wav - |``) is not an option because ESPnet's
``sound`` loader (``espnet2/fileio/sound_scp.py``) opens ``wav.scp`` entries
with soundfile and does not support pipes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import soundfile

from espnet_delta.fileio import atomic_path

__all__ = ["TARGET_RATE", "AudioError", "AudioInfo", "probe_audio", "read_audio", "resample_to_16k"]

TARGET_RATE = 16000


class AudioError(Exception):
    """Audio that cannot be used; ``reason`` is a summary reason name."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class AudioInfo:
    samplerate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.samplerate

    @property
    def needs_resampling(self) -> bool:
        return self.samplerate != TARGET_RATE or self.channels != 1


#: What soundfile raises for a file it cannot open or decode (LibsndfileError is a RuntimeError).
_READ_ERRORS = (RuntimeError, OSError, ValueError, EOFError)


def probe_audio(path: Union[str, Path], decode: bool = False) -> AudioInfo:
    """Read the header of ``path`` (and decode everything if ``decode``).

    Raises :class:`AudioError` with reason ``unreadable_audio`` or
    ``empty_audio``.  Header-only probing is fast but misses a file whose
    body is truncated; ``decode=True`` catches that at the cost of reading
    all audio once.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise AudioError("unreadable_audio", f"dangling symlink to {os.readlink(path)}")
    try:
        if path.stat().st_size == 0:
            raise AudioError("empty_audio", "0-byte file")
        info = soundfile.info(str(path))
        if (missing := _truncated_wav(info.extra_info)) is not None:
            raise AudioError("unreadable_audio", f"truncated WAV: the header announces {missing} more bytes of data than the file holds")
        frames = int(info.frames)
        # A FLAC stream header may leave the length unknown; libsndfile then
        # reports SF_COUNT_MAX frames.  Count them by decoding.
        if decode or frames >= _UNKNOWN_FRAMES:
            frames = _count_frames(path)
    except _READ_ERRORS as exc:
        raise AudioError("unreadable_audio", str(exc).strip() or type(exc).__name__) from None
    if frames <= 0 or info.samplerate <= 0:
        raise AudioError("empty_audio", f"{frames} frames")
    return AudioInfo(int(info.samplerate), int(info.channels), frames)


_UNKNOWN_FRAMES = 1 << 62
#: libsndfile's header dump of a WAV whose data chunk is shorter than its header says.
_WAV_DATA_RE = re.compile(r"^data : (\d+) \(should be (\d+)\)", re.MULTILINE)
#: Data sizes that writers to a pipe put in the header when the length is not known yet.
_STREAM_SIZES = (0, 0x7FFFF000, 0x7FFFFFFF, 0xFFFFFFFF)


def _truncated_wav(extra_info: str) -> int | None:
    """Bytes missing from a truncated WAV (copy cut short), or ``None``. libsndfile reads such a
    file as shorter than announced, without an error; streamed WAVs (unknown length) are fine."""
    m = _WAV_DATA_RE.search(extra_info)
    if m is None:
        return None
    announced, present = int(m[1]), int(m[2])
    if announced in _STREAM_SIZES or announced >= 0x7FFF0000 or present >= announced:
        return None
    return announced - present


def _count_frames(path: Path) -> int:
    """Decode the whole file (raises on a corrupt body) and return its frame count."""
    frames = 0
    with soundfile.SoundFile(str(path)) as f:
        while n := len(f.buffer_read(1 << 16, dtype="int16")) // (2 * f.channels):
            frames += n
    return frames


def read_audio(path: Union[str, Path]) -> tuple[np.ndarray, int]:
    """All samples of ``path`` as float32 ``(frames, channels)``, and the sample rate.

    Raises :class:`AudioError` with reason ``unreadable_audio`` or ``empty_audio``.
    """
    try:
        wav, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except _READ_ERRORS as exc:
        raise AudioError("unreadable_audio", str(exc).strip() or type(exc).__name__) from None
    if wav.shape[0] == 0:
        raise AudioError("empty_audio", "0 frames")
    return wav, int(rate)


def resample_to_16k(src: Path, dst: Path) -> Path:
    """Write a 16 kHz mono 16-bit WAV copy of ``src`` at ``dst`` with sox.

    Written to a temporary name and renamed, so an interrupted run leaves no
    truncated file.  Raises :class:`AudioError` (reason ``bad_sample_rate``)
    when sox is missing or fails.
    """
    if shutil.which("sox") is None:
        raise AudioError("bad_sample_rate", "sox is not installed (make install provides it)")
    with atomic_path(dst) as tmp:
        cmd = ["sox", "-R", "-D", str(src), "-r", str(TARGET_RATE), "-c", "1", "-b", "16", "-t", "wav", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise AudioError("bad_sample_rate", f"sox failed: {proc.stderr.strip()}")
    return dst
