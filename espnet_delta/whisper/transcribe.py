"""Whisper transcripts of wav.scp utterances for the MyST screening (``utt_id<TAB>hypothesis``).

The delta-fusion protocol drops utterances whose Whisper-large-v2 transcript has a WER
above 50 % against the MyST transcript (:mod:`espnet_delta.data.screen` applies the
filter).  The transcripts come from here, through openai-whisper's own batched
``whisper.decode``:

* English, greedy (temperature 0, no beam), no timestamps, no temperature fallback and
  no conditioning on earlier text: one deterministic pass whose length is bounded by
  ``max_tokens`` per 30-s window (a hallucination loop stops there);
* each utterance is one 30-s window (zero-padded, as Whisper is trained); a longer one
  is cut into equal parts of at most 30 s whose texts are joined;
* fp16 activations on a GPU, float32 on the CPU (the same code);
* a model is a hub name (``large-v2``, downloaded by openai-whisper into
  ``download_root``) or a local checkpoint file (e.g. :mod:`.tiny`), loaded by
  :mod:`.load`; any failure to load it is one ``WhisperLoadError`` line naming the model.

Resumable and shardable: shard ``k`` of ``nj`` (round-robin over the sorted ids) appends
each finished batch to ``<out>.part<k>of<nj>`` and flushes it; a rerun skips every
utterance already in ``<out>`` or in any part file (a torn last line is cut off).  When
nothing is missing the part files are merged into ``<out>`` (sorted by id, written
atomically, under a lock so concurrent shards merge once) and removed, so ``<out>``
exists only complete (the empty lock file ``.<out>.lock`` stays).  ``<out>.json`` records
the model and decoding options; a rerun with others is refused instead of mixing two
models' transcripts.  An empty hypothesis is kept as an empty field (``utt<TAB>``).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from typeguard import typechecked

from espnet_delta.data.wav_scp import AudioItem, AudioReader, read_wav_scp
from espnet_delta.features.audio import prefetched, shard_items
from espnet_delta.fileio import read_table, write_lines_atomic, write_text_atomic
from espnet_delta.whisper.load import WhisperLoadError
from espnet_delta.whisper.load import load_whisper as load_on_cpu

__all__ = ["TranscribeConfig", "TranscribeResult", "load_whisper", "transcribe_wav_scps", "windows"]

logger = logging.getLogger(__name__)

#: Whisper's window: 30 s at 16 kHz (``whisper.audio.N_SAMPLES``).
WINDOW_SAMPLES = 30 * 16000


@typechecked
@dataclasses.dataclass(frozen=True)
class TranscribeConfig:
    """Options of a transcription; :meth:`provenance` (``<out>.json``) holds those that decide the text."""

    model: str  # hub name (large-v2) or checkpoint file
    language: str = "en"
    max_tokens: int = 224  # per 30-s window; Whisper's own cap is half its 448-token context
    batch_size: int = 16  # windows per whisper.decode call
    download_root: Optional[str] = None  # openai-whisper's default: ~/.cache/whisper

    def provenance(self) -> Dict[str, object]:
        import whisper

        model = self.model if self.model in whisper.available_models() else str(Path(self.model).resolve())
        return {"model": model, "language": self.language, "max_tokens": self.max_tokens,
                "decoding": "greedy, temperature 0, no timestamps, no fallback",
                "openai_whisper": whisper.__version__}


@dataclasses.dataclass(frozen=True)
class TranscribeResult:
    out: Path
    num_utts: int  # in the wav.scp files
    num_skipped: int  # of this shard, transcribed by an earlier run
    num_transcribed: int
    audio_seconds: float  # of the transcribed ones
    compute_seconds: float
    complete: bool  # <out> written (every utterance has a hypothesis)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def load_whisper(name: str, device: str = "cpu", download_root: Optional[str] = None):
    """The Whisper to transcribe with, on ``device`` in eval mode; every failure is one
    :class:`~espnet_delta.whisper.load.WhisperLoadError` line naming the model."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise WhisperLoadError(f"Whisper model {name!r}: --device {device} but no CUDA GPU is visible")
    try:
        model = load_on_cpu(name, download_root)
    except WhisperLoadError:
        raise
    except Exception as exc:  # what .load leaves unnamed, e.g. a file torch cannot unpickle, a bad download checksum
        logger.debug("loading Whisper %s failed", name, exc_info=True)
        raise WhisperLoadError(f"cannot load Whisper model {name!r}: {_one_line(exc)}") from None
    return model.to(device).eval()


# ----------------------------------------------------------------------------- files
_PART_RE = re.compile(r"\.part(\d+)of(\d+)$")


class HypothesisFiles:
    """``<out>``, its part files, its provenance record and its merge lock."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def part(self, k: int, nj: int) -> Path:
        return self.out.with_name(f"{self.out.name}.part{k}of{nj}")

    def parts(self) -> List[Path]:
        prefix = self.out.name
        if not self.out.parent.is_dir():
            return []
        return sorted(p for p in self.out.parent.iterdir()
                      if p.name.startswith(prefix) and _PART_RE.fullmatch(p.name[len(prefix):]))

    @property
    def meta(self) -> Path:
        return self.out.with_name(self.out.name + ".json")

    @property
    def lock(self) -> Path:
        return self.out.with_name(f".{self.out.name}.lock")

    def done(self) -> Dict[str, str]:
        """Every hypothesis written so far: ``<out>`` and the complete lines of the part files."""
        hyps = {row.key: row.value for row in read_table(self.out, what="Whisper hypotheses", skip_blank=True)} \
            if self.out.is_file() else {}
        for part in self.parts():
            hyps.update(read_part(part))
        return hyps

    def check_provenance(self, provenance: Dict[str, object]) -> None:
        """Record ``provenance``, or refuse when earlier transcripts were made otherwise."""
        if self.meta.is_file():
            try:
                old = json.loads(self.meta.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise ValueError(f"{self.meta}: unreadable ({exc}); delete it") from None
            diff = {k: (old.get(k), v) for k, v in provenance.items() if k != "openai_whisper" and old.get(k) != v}
            if diff and (self.out.is_file() or self.parts()):
                raise ValueError(
                    f"{self.meta}: {self.out} holds transcripts of other settings "
                    f"({', '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in diff.items())}); "
                    f"delete {self.out}* to start over or choose another output file"
                )
        write_text_atomic(self.meta, json.dumps(provenance, indent=1) + "\n")


def read_part(path: Path) -> Dict[str, str]:
    """The complete ``utt<TAB>hyp`` lines of a part file (a torn last line is ignored)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:  # merged and removed by another shard meanwhile
        return {}
    hyps = {}
    for lineno, line in enumerate(data.split(b"\n")[:-1], 1):
        utt, tab, hyp = line.decode("utf-8", errors="strict").partition("\t")
        if not tab or not utt:
            raise ValueError(f"{path}:{lineno}: expected 'utt_id<TAB>hypothesis', got {line[:80]!r}")
        hyps[utt] = hyp
    return hyps


class _PartWriter:
    """Append-only writer of one part file; exclusive (flock) so one process writes a shard."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> "_PartWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.path, "ab+")
        try:
            fcntl.flock(self.f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.f.close()
            raise ValueError(f"{self.path}: another process is transcribing this shard") from None
        self.f.seek(0)
        data = self.f.read()
        if data and not data.endswith(b"\n"):  # an interrupted write: drop the torn line
            self.f.truncate(data.rfind(b"\n") + 1)
        return self

    def write(self, hyps: Iterable[Tuple[str, str]]) -> None:
        self.f.write("".join(f"{utt}\t{hyp}\n" for utt, hyp in hyps).encode("utf-8"))
        self.f.flush()

    def __exit__(self, *exc) -> None:
        self.f.close()  # releases the lock


# ----------------------------------------------------------------------------- decoding
Utt = Tuple[AudioReader, AudioItem]


def read_utterances(wav_scps: Sequence[Path]) -> List[Utt]:
    """The utterances of all ``wav.scp`` files, sorted by id; an id with two audio files is refused."""
    seen: Dict[str, Utt] = {}
    for scp in wav_scps:
        reader = AudioReader(Path(scp))
        for item in read_wav_scp(Path(scp)):
            if item.utt in seen and seen[item.utt][1].path != item.path:
                other = seen[item.utt]
                raise ValueError(f"{scp}:{item.lineno}: utterance {item.utt} is also in "
                                 f"{other[0].wav_scp}:{other[1].lineno} with another audio file")
            seen.setdefault(item.utt, (reader, item))
    return [seen[k] for k in sorted(seen, key=lambda u: u.encode("utf-8"))]


def windows(wav: np.ndarray) -> List[np.ndarray]:
    """``wav`` in equal consecutive parts of at most 30 s (one part when it fits)."""
    return np.array_split(wav, max(1, math.ceil(len(wav) / WINDOW_SAMPLES)))


class _Decoder:
    """Batched greedy decoding of 30-s windows with openai-whisper."""

    def __init__(self, model, config: TranscribeConfig, device: str) -> None:
        import whisper

        self.model, self.device, self.batch_size = model, device, config.batch_size
        self.options = whisper.DecodingOptions(
            task="transcribe", language=config.language, temperature=0.0, sample_len=config.max_tokens,
            without_timestamps=True, fp16=device.startswith("cuda"),
        )

    def __call__(self, wavs: Sequence[np.ndarray]) -> List[str]:
        """One hypothesis per waveform (16 kHz float32), whitespace collapsed."""
        import torch
        import whisper

        parts = [(i, w) for i, wav in enumerate(wavs) for w in windows(wav)]
        texts: List[List[str]] = [[] for _ in wavs]
        for start in range(0, len(parts), self.batch_size):
            chunk = parts[start : start + self.batch_size]
            mel = torch.stack([
                whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(np.ascontiguousarray(w))),
                                            self.model.dims.n_mels, device=self.device)
                for _, w in chunk
            ])
            for (i, _), result in zip(chunk, whisper.decode(self.model, mel, self.options)):
                texts[i].append(result.text)
        return [" ".join(" ".join(t).split()) for t in texts]


# ----------------------------------------------------------------------------- driver
@typechecked
def transcribe_wav_scps(
    wav_scps: Sequence[Path],
    out: Path,
    config: TranscribeConfig,
    device: str = "cpu",
    nj: int = 1,
    shard: Optional[int] = None,
    progress: bool = True,
    model=None,
) -> TranscribeResult:
    """Transcribe the utterances of shard ``shard`` (all when ``None``) into ``out`` (module docstring).

    The model (``config.model``, or ``model`` when given) is loaded only when there is work.
    """
    from tqdm import tqdm

    if shard is not None and not 1 <= shard <= nj:
        raise ValueError(f"--shard {shard} is not in 1..{nj}")
    out = Path(out)
    files = HypothesisFiles(out)
    utts = read_utterances(wav_scps)
    k, n = (1, 1) if shard is None else (shard, nj)
    mine = utts if shard is None else shard_items(utts, nj, shard)
    done = files.done()
    todo = [u for u in mine if u[1].utt not in done]
    audio_seconds, start = 0.0, time.perf_counter()
    if todo:
        files.check_provenance(config.provenance())
        if model is None:
            model = load_whisper(config.model, device, config.download_root)
        decode = _Decoder(model, config, device)
        batches = [todo[i : i + config.batch_size] for i in range(0, len(todo), config.batch_size)]
        logger.info("Whisper %s on %s: %d of %d utterances to transcribe (shard %d/%d) -> %s",
                    config.model, device, len(todo), len(mine), k, n, files.part(k, n))
        with _PartWriter(files.part(k, n)) as writer, \
                tqdm(total=len(todo), unit="utt", desc=f"whisper {k}/{n}", disable=not progress, leave=False) as bar:
            for batch, wavs in prefetched(batches, lambda b: [reader.read(item) for reader, item in b]):
                hyps = decode(wavs)
                writer.write((item.utt, hyp) for (_, item), hyp in zip(batch, hyps))
                audio_seconds += sum(len(w) for w in wavs) / 16000
                bar.update(len(batch))
    complete = _merge(files, utts)
    return TranscribeResult(out, len(utts), len(mine) - len(todo), len(todo), audio_seconds,
                            time.perf_counter() - start, complete)


def _merge(files: HypothesisFiles, utts: Sequence[Utt]) -> bool:
    """Write ``<out>`` from ``<out>`` and the part files once every utterance has a hypothesis."""
    files.lock.parent.mkdir(parents=True, exist_ok=True)
    with open(files.lock, "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # concurrent shards: one merges, the others see it done
        parts = files.parts()
        done = files.done()
        missing = sum(item.utt not in done for _, item in utts)
        if missing:
            logger.info("%d utterances have no hypothesis yet (other shards); %s is written when they have",
                        missing, files.out)
            return False
        if parts or not files.out.is_file():
            keys = sorted(done, key=lambda u: u.encode("utf-8"))
            write_lines_atomic(files.out, (f"{u}\t{done[u]}\n" for u in keys), fsync=True)
            for part in parts:
                part.unlink()
            logger.info("wrote %s (%d hypotheses)", files.out, len(keys))
    return True
