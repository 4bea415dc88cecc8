"""The embedded default corpus ``mini_myst``: synthetic, offline, deterministic.

Short science-tutoring sentences from a small vocabulary (a seeded template
grammar) are spoken by espeak-ng and resampled by sox to 16 kHz mono FLAC:

* a child part in the MyST layout (``myst/data/{train,development,test}/
  <student>/<session>/<utt>.flac`` + ``.trn``), high-pitched voices
  (``-p 70..99``), lower-case ``.trn`` lines with some MyST markup
  (``<NOISE>``, ``(( ))``) and spoken fillers (``um``, ``uh``) so that
  transcript cleaning is exercised, a few one- or two-word answers and, at
  full scale, two utterances longer than 30 s (dropped by the protocol
  filters, as in real MyST);
* an adult part in the LibriSpeech layout (``librispeech/{train-clean-100,
  dev-clean,test-clean}/<spk>/<chapter>/``), normal pitch (``-p 30..55``).

At ``scale=1`` this is about half an hour of child training speech, a few
minutes each of dev and test, and a similar amount of adult speech, built in
well under two minutes on two cores.  ``scale`` shrinks speakers and
utterances per speaker (each by ``sqrt(scale)``) for tests.

Phone targets (for phone CTC and PER, like SUPERB's phone recognition): ``phones.txt``
at the corpus root holds one ``<utt_id> <phones>`` line per utterance of both parts,
keyed by the utterance ids data preparation gives (MyST ``<student>-<basename>``,
LibriSpeech ``<spk>-<chapter>-<k>``), in generation order. The phones are espeak-ng's
own phonemes for exactly what it speaks (``espeak-ng -q --ipa --sep=_ -v <language>``,
the voice's language without its ``+variant``; spoken fillers included, transcript-only
markup not): IPA, one token per espeak phoneme (``aɪ``, ``ɑː``, ``tʃ`` stay single
tokens), separated by single spaces, stress marks ``ˈ ˌ`` removed, no word boundaries.
A complete corpus from before this file existed gets it on the next call; no other
file changes.

The same ``scale``/``seed`` give the same bytes on every run (espeak-ng and
sox are deterministic; sox runs with ``-R -D``: repeatable, no dither).  The
corpus is built in a temporary sibling folder, a marker file is written last
and the folder is renamed into place; an existing complete corpus with the
same parameters is left alone.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .myst import myst_utt_id
from .text_norm import normalize_transcript

__all__ = ["MARKER", "PHONES", "MiniCorpus", "VoiceProfile", "make_mini_corpus", "make_sentence", "phonemes", "write_corpus"]

logger = logging.getLogger(__name__)

MARKER = ".complete.json"
PHONES = "phones.txt"
STRESS_MARKS = ("ˈ", "ˌ")
VERSION = 1  # bump when the generated content changes

# ---------------------------------------------------------------- vocabulary
_NOUNS = ("magnet", "battery", "circuit", "wire", "bulb", "switch", "motor", "nail", "compass", "water",
          "ice", "rock", "soil", "sand", "plant", "seed", "sun", "light", "heat", "energy", "air", "cloud")
_PLURALS = ("magnets", "wires", "rocks", "plants", "seeds", "roots", "leaves", "clouds")
_ADJECTIVES = ("hot", "cold", "big", "small", "bright", "heavy", "wet", "dry", "strong", "weak")
_VERBS = ("push", "pull", "move", "grow", "melt", "stick", "see", "test", "heat", "light")
_VERBS_3RD = ("pushes", "pulls", "moves", "flows", "grows", "melts", "sticks", "makes", "needs", "goes")

# Each template is a sequence of literal words and slots {N} {P} {A} {V} {V3}.
_TEMPLATES: tuple[str, ...] = (
    "the {N} {V3} the {N}",
    "i think the {N} is {A}",
    "{P} need {N} to grow",
    "we can {V} the {N}",
    "it gets {A} in the {N}",
    "the {P} are {A}",
    "the {N} makes {N}",
    "because the {N} is {A}",
    "when you {V} the {N} it {V3}",
    "the {N} and the {N} are {A}",
    "they {V} to the {N}",
    "i don't think the {N} is {A}",
    "it's a {A} {N}",
    "the {N} {V3} when it is {A}",
    "so the {P} {V} more",
    "if we {V} it the {N} {V3}",
)
_SHORT_ANSWERS = ("yes", "no", "okay", "i know", "the {N}", "{A}")
_SLOTS = {"N": _NOUNS, "P": _PLURALS, "A": _ADJECTIVES, "V": _VERBS, "V3": _VERBS_3RD}

_CHILD_VOICES = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc")
_CHILD_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "m1", "m3")
_ADULT_VOICES = ("en-us", "en", "en-gb-x-rp", "en-gb-x-gbclan", "en-029", "en-gb-x-gbcwmd")
_ADULT_VARIANTS = ("m1", "m2", "m3", "m4", "m7", "f1", "f2", "f4")


def make_sentence(
    rng: random.Random, templates: Sequence[str] = _TEMPLATES, slots: Mapping[str, Sequence[str]] = _SLOTS
) -> str:
    """Fill one template with words drawn by ``rng`` from ``slots`` (lower case, no markup)."""
    template = rng.choice(templates)
    words = [rng.choice(slots[w[1:-1]]) if w.startswith("{") else w for w in template.split()]
    return " ".join(words)


# ------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class _Voice:
    name: str  # espeak-ng -v
    pitch: int  # -p
    speed: int  # -s (words per minute)
    gap: int  # -g (word gap, 10 ms units)


@dataclass(frozen=True)
class _Item:
    """One utterance to synthesise."""

    audio: Path  # relative to the corpus root
    spoken: str  # what espeak-ng says
    voice: _Voice


@dataclass(frozen=True)
class _Part:
    folder: str
    speakers: int
    utts_per_speaker: int


_CHILD_PARTS = (_Part("train", 16, 55), _Part("development", 4, 25), _Part("test", 4, 25))
_ADULT_PARTS = (_Part("train-clean-100", 16, 55), _Part("dev-clean", 4, 12), _Part("test-clean", 4, 12))


def _scaled(n: int, scale: float) -> int:
    return max(1, int(n * math.sqrt(scale) + 0.5))


@dataclass(frozen=True)
class VoiceProfile:
    """The espeak-ng settings one speaker's voice is drawn from (ranges inclusive)."""

    languages: tuple[str, ...]  # -v language part
    variants: tuple[str, ...]  # -v "+variant" part
    pitch: tuple[int, int]  # -p
    speed: tuple[int, int]  # -s (words per minute)
    gap: tuple[int, int] = (0, 2)  # -g (word gap, 10 ms units)

    def draw(self, rng: random.Random) -> _Voice:
        variant = rng.choice(self.variants)
        return _Voice(f"{rng.choice(self.languages)}+{variant}", rng.randint(*self.pitch), rng.randint(*self.speed), rng.randint(*self.gap))


CHILD_VOICES = VoiceProfile(_CHILD_VOICES, _CHILD_VARIANTS, pitch=(70, 99), speed=(135, 175))
ADULT_VOICES = VoiceProfile(_ADULT_VOICES, _ADULT_VARIANTS, pitch=(30, 55), speed=(150, 190))


def _voice(rng: random.Random, child: bool) -> _Voice:
    return (CHILD_VOICES if child else ADULT_VOICES).draw(rng)


def _child_utterance(rng: random.Random) -> tuple[str, str]:
    """(spoken text, MyST-style .trn line) for one child utterance."""
    roll = rng.random()
    if roll < 0.04:
        spoken = make_sentence(rng, _SHORT_ANSWERS)
        return spoken, spoken
    spoken = make_sentence(rng)
    words = spoken.split()
    if roll < 0.10:  # spoken filler, kept in the transcript as MyST does
        filler = rng.choice(("um", "uh"))
        pos = rng.randrange(len(words))
        spoken_words = words[:pos] + [filler] + words[pos:]
        return " ".join(spoken_words), " ".join(spoken_words)
    if roll < 0.14:  # non-speech markup in the transcript only
        tag = rng.choice(("<NOISE>", "(( ))", "<SIDE_SPEECH>"))
        pos = rng.randrange(len(words) + 1)
        return spoken, " ".join(words[:pos] + [tag] + words[pos:])
    if roll < 0.20:  # punctuation as transcribers type it
        return spoken, spoken.capitalize() + rng.choice((".", "?", "..."))
    return spoken, spoken


def _plan_myst(rng: random.Random, scale: float, items: list[_Item], texts: dict[Path, str]) -> None:
    n_long = int(2 * scale)
    spk_index = 0
    for part in _CHILD_PARTS:
        for _ in range(_scaled(part.speakers, scale)):
            spk_index += 1
            student = f"mini_c{spk_index:03d}"
            voice = _voice(rng, child=True)
            n_utts = _scaled(part.utts_per_speaker, scale)
            for k in range(n_utts):
                session = f"{student}_s{1 + k * 2 // n_utts}"  # two sessions per student
                base = Path("myst", "data", part.folder, student, session, f"{session}_{k:03d}")
                if part.folder == "train" and n_long > 0 and k == n_utts - 1:
                    n_long -= 1  # one long monologue (> 30 s) per speaker until n_long are placed
                    spoken = " and ".join(make_sentence(rng) for _ in range(18))
                    trn = spoken
                    item_voice = _Voice(voice.name, voice.pitch, 110, voice.gap)
                else:
                    spoken, trn = _child_utterance(rng)
                    item_voice = voice
                items.append(_Item(base.with_suffix(".flac"), spoken, item_voice))
                texts[base.with_suffix(".trn")] = trn + "\n"


def _plan_librispeech(rng: random.Random, scale: float, items: list[_Item], texts: dict[Path, str]) -> None:
    spk_index = 0
    for part in _ADULT_PARTS:
        for _ in range(_scaled(part.speakers, scale)):
            spk_index += 1
            spk, chapter = str(9000 + spk_index), str(100 + spk_index)
            voice = _voice(rng, child=False)
            chapter_dir = Path("librispeech", part.folder, spk, chapter)
            lines = []
            for k in range(_scaled(part.utts_per_speaker, scale)):
                utt = f"{spk}-{chapter}-{k:04d}"
                sentence = make_sentence(rng)
                items.append(_Item(chapter_dir / f"{utt}.flac", sentence, voice))
                lines.append(f"{utt} {sentence.upper()}\n")
            texts[chapter_dir / f"{spk}-{chapter}.trans.txt"] = "".join(lines)


def _utt_id(item: _Item) -> str:
    """The utterance id data preparation gives ``item`` (see espnet_delta.data.myst / librispeech)."""
    if item.audio.parts[0] == "myst":
        session_dir = item.audio.parent
        return myst_utt_id(session_dir.parent.name, session_dir.name, item.audio.stem)
    return item.audio.stem


# ------------------------------------------------------------- phonemes
def phonemes(text: str, voice: str) -> str:
    """espeak-ng's phonemes of ``text`` in ``voice``'s language: space-separated IPA, no stress."""
    language = voice.split("+")[0]
    cmd = ["espeak-ng", "-q", "--ipa", "--sep=_", "-v", language, text]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for mark in STRESS_MARKS:
        out = out.replace(mark, "")
    phones = [p for p in re.split(r"[_\s]+", out) if p]
    if not phones:
        raise RuntimeError(f"espeak-ng gave no phonemes for {text!r} (voice {language})")
    return " ".join(phones)


def _phone_lines(items: Sequence[_Item], nj: int) -> str:
    with ThreadPoolExecutor(max_workers=max(1, nj)) as pool:
        phones = list(pool.map(lambda it: phonemes(it.spoken, it.voice.name), items))
    return "".join(f"{_utt_id(it)} {p}\n" for it, p in zip(items, phones))


# ------------------------------------------------------------- synthesis
def _synthesise(root: Path, item: _Item) -> None:
    """espeak-ng (22.05 kHz WAV on stdout) -> sox -> 16 kHz mono 16-bit FLAC."""
    v = item.voice
    tts = ["espeak-ng", "-v", v.name, "-p", str(v.pitch), "-s", str(v.speed), "-g", str(v.gap), "--stdout", item.spoken]
    wav = subprocess.run(tts, check=True, capture_output=True).stdout
    out = root / item.audio
    out.parent.mkdir(parents=True, exist_ok=True)
    sox = ["sox", "-R", "-D", "-t", "wav", "-", "-r", "16000", "-c", "1", "-b", "16", "-t", "flac", str(out)]
    subprocess.run(sox, input=wav, check=True, capture_output=True)


@dataclass(frozen=True)
class MiniCorpus:
    """Where the generated corpus lives (pass these to prepare_data)."""

    root: Path
    myst_root: Path
    librispeech_root: Path


def _params(scale: float, seed: int) -> dict[str, object]:
    return {"version": VERSION, "scale": scale, "seed": seed}


def _existing(out: Path, params: dict[str, object]) -> bool:
    """True if ``out`` is a complete corpus with ``params``; clear it if it is ours but stale."""
    marker = out / MARKER
    if not out.exists():
        return False
    if marker.is_file():
        try:
            found = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found = {}
        if all(found.get(k) == v for k, v in params.items()):
            return True
        logger.info("%s was generated with other parameters (%s); regenerating", out, found)
        shutil.rmtree(out)
        return False
    if any(out.iterdir()):
        raise FileExistsError(f"{out} exists, is not empty and is not a complete mini corpus; remove it or pick another --out")
    out.rmdir()
    return False


def make_mini_corpus(out: str | os.PathLike[str], scale: float = 1.0, seed: int = 0, nj: int = 2) -> MiniCorpus:
    """Generate (or reuse) the mini corpus at ``out``; see the module docstring."""
    root = Path(out).resolve()
    corpus = MiniCorpus(root, root / "myst", root / "librispeech")
    params = _params(scale, seed)
    existing = _existing(root, params)
    if existing and (root / PHONES).is_file():
        logger.info("mini corpus already complete at %s", root)
        return corpus
    require_tools()
    rng = random.Random(seed)
    items: list[_Item] = []
    texts: dict[Path, str] = {}
    _plan_myst(rng, scale, items, texts)
    _plan_librispeech(rng, scale, items, texts)
    if existing:  # complete from before phones.txt existed: add it, touch nothing else
        partial = root / f".{PHONES}.tmp"
        partial.write_text(_phone_lines(items, nj), encoding="utf-8")
        os.replace(partial, root / PHONES)
        logger.info("mini corpus at %s: added %s", root, PHONES)
        return corpus
    write_corpus(root, params, items, texts, nj)
    return corpus


def require_tools() -> None:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is required to build the mini corpus (run `make install`)")


def write_corpus(
    root: Path, params: dict[str, object], items: Sequence[_Item], texts: dict[Path, str], nj: int, desc: str = "mini corpus"
) -> None:
    """Write ``texts``, ``phones.txt``, the audio of ``items`` and the marker into a temporary
    sibling of ``root``, then rename it to ``root`` (which must not exist)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp.", dir=root.parent))
    try:
        for rel, content in texts.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(content, encoding="utf-8")
        (tmp / PHONES).write_text(_phone_lines(items, nj), encoding="utf-8")
        with ThreadPoolExecutor(max_workers=max(1, nj)) as pool:
            list(tqdm(pool.map(lambda it: _synthesise(tmp, it), items), total=len(items), desc=desc, unit="utt", leave=False))
        vocab = sorted({w for it in items for w in normalize_transcript(it.spoken).split()})
        info = {**params, "utterances": len(items), "vocabulary": len(vocab)}
        (tmp / MARKER).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("%s: %d utterances, vocabulary %d words, at %s", desc, len(items), len(vocab), root)
