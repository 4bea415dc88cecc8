"""The second synthetic child corpus ``mini_kids``: to mini_myst what CMU Kids is to MyST.

Task vectors learnt on one child corpus are tested on another (arXiv 2501.08468 moves
an augmentation task vector from MyST to CMU Kids). CMU Kids is read speech of younger
children (ages 6-11) from storybook sentences, MyST conversational science tutoring
(grades 3-5). This corpus differs from mini_myst's child part
(:mod:`espnet_delta.data.mini_corpus`) the same ways:

* voices: other espeak-ng variants and accents (:data:`KIDS_VOICES`, no language+variant
  pair of mini_myst), pitch 80-99 (mini_myst 70-99), slower (110-140 words per minute,
  mini_myst 135-175) and word by word (word gap 30-80 ms, mini_myst 0-20 ms), as
  beginning readers read;
* vocabulary: storybook sentences about animals, toys and colours whose content words
  are disjoint from mini_myst's science words; only letters that occur in mini_myst's
  character set (no j, q, x, z), so a model with mini_myst's token list can spell them;
* transcripts: lower case, some ``<NOISE>`` markup, some re-read words (spoken twice,
  transcribed twice), some capitalised with punctuation.

Layout: ``<out>/kids/{train,dev,test}/<speaker>/<speaker>-<k>.flac`` + ``.trn`` (one
line), ``<out>/phones.txt`` as for mini_myst. Speakers 20/4/5 with 16/15/16
utterances each at ``scale=1`` (about 16/3.5/3.8 minutes; both shrink with
``sqrt(scale)``): more speakers than mini_myst's 16/4/4 but half its child training
speech (fewer speakers did not generalise: with 10 the tiny models stayed above 60 % dev CER).
Generation shares mini_myst's machinery (deterministic bytes, temporary sibling folder,
marker written last, a complete corpus left alone); :func:`prepare_kids` writes the
Kaldi dirs ``<data_dir>/<prefix>{train,dev,test}`` with the MyST protocol's filters.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

from .kaldi_dir import write_data_dir
from .mini_corpus import VoiceProfile, _existing, _Item, _scaled, make_sentence, require_tools, write_corpus
from .report import SplitStats, write_summary_tsv
from .screen import Candidate, ScreenConfig, screen

__all__ = ["KIDS_SLOTS", "KIDS_SPLITS", "KIDS_TEMPLATES", "KIDS_VOICES", "make_mini_kids", "prepare_kids"]

logger = logging.getLogger(__name__)

VERSION = 1  # bump when the generated content changes
KIDS_SPLITS = ("train", "dev", "test")
_SPEAKERS = {"train": (20, 16), "dev": (4, 15), "test": (5, 16)}  # speakers, utterances per speaker

KIDS_SLOTS: dict[str, tuple[str, ...]] = {
    "N": ("dog", "cat", "bird", "fish", "frog", "duck", "horse", "bear", "ball", "kite", "boat", "tree",
          "house", "hat", "bed", "cake", "farm", "pond", "hill", "moon", "book", "car", "cup", "door"),
    "P": ("dogs", "cats", "birds", "ducks", "frogs", "apples", "trees", "books"),
    "A": ("red", "blue", "green", "little", "happy", "sad", "fast", "slow", "funny", "sleepy", "yellow", "pink"),
    "V": ("run", "hop", "swim", "play", "sing", "read", "eat", "find", "fly", "hide", "ride"),
    "V3": ("runs", "hops", "swims", "plays", "sings", "reads", "eats", "finds", "flies", "hides", "rides"),
}
KIDS_TEMPLATES: tuple[str, ...] = (
    "the {N} can {V}",
    "look at the {A} {N}",
    "my {N} is {A}",
    "the {A} {N} {V3} in the {N}",
    "i see a {N} and a {N}",
    "we like to {V} with the {P}",
    "where is the {A} {N}",
    "the {P} {V} on the {N}",
    "she has a {A} {N}",
    "he {V3} to the {N}",
    "one day the {N} went to the {N}",
    "can you {V} like a {N}",
    "mom said the {N} was {A}",
    "the {N} sat on the {N}",
    "down the {N} {V3} the {A} {N}",
    "they all {V} at the {N}",
)
KIDS_VOICES = VoiceProfile(
    languages=("en-us", "en-gb-x-gbclan", "en-gb-x-gbcwmd"),
    variants=("Annie", "linda", "steph", "anika", "belinda", "Andrea", "Alicia", "m5", "m6"),
    pitch=(80, 99),
    speed=(110, 140),
    gap=(3, 8),
)


def _utterance(rng: random.Random) -> tuple[str, str]:
    """(spoken text, transcript line) of one read sentence."""
    spoken = make_sentence(rng, KIDS_TEMPLATES, KIDS_SLOTS)
    words = spoken.split()
    roll = rng.random()
    if roll < 0.06:  # a word read twice, as beginning readers do
        pos = rng.randrange(len(words))
        spoken = " ".join(words[: pos + 1] + words[pos:])
        return spoken, spoken
    if roll < 0.12:  # non-speech markup in the transcript only
        pos = rng.randrange(len(words) + 1)
        return spoken, " ".join(words[:pos] + ["<NOISE>"] + words[pos:])
    if roll < 0.17:
        return spoken, spoken.capitalize() + "."
    return spoken, spoken


def _plan(rng: random.Random, scale: float) -> tuple[list[_Item], dict[Path, str]]:
    items: list[_Item] = []
    texts: dict[Path, str] = {}
    spk_index = 0
    for split in KIDS_SPLITS:
        speakers, utts = _SPEAKERS[split]
        for _ in range(_scaled(speakers, scale)):
            spk_index += 1
            spk = f"kid{spk_index:02d}"
            voice = KIDS_VOICES.draw(rng)
            for k in range(_scaled(utts, scale)):
                base = Path("kids", split, spk, f"{spk}-{k:03d}")
                spoken, trn = _utterance(rng)
                items.append(_Item(base.with_suffix(".flac"), spoken, voice))
                texts[base.with_suffix(".trn")] = trn + "\n"
    return items, texts


def make_mini_kids(out: str | os.PathLike[str], scale: float = 1.0, seed: int = 0, nj: int = 2) -> Path:
    """Generate (or reuse) the corpus at ``out``; returns the corpus root (``<out>/kids`` is the speech)."""
    root = Path(out).resolve()
    params = {"corpus": "mini_kids", "version": VERSION, "scale": scale, "seed": seed}
    if _existing(root, params):
        logger.info("mini_kids corpus already complete at %s", root)
        return root
    require_tools()
    items, texts = _plan(random.Random(seed), scale)
    write_corpus(root, params, items, texts, nj, desc="mini_kids corpus")
    return root


def _candidates(split_dir: Path):
    for audio in sorted(split_dir.glob("*/*.flac")):
        trn = audio.with_suffix(".trn")
        yield Candidate(audio.stem, audio.parent.name, audio, trn.read_bytes() if trn.is_file() else None, trn)


def prepare_kids(
    corpus: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    prefix: str = "kids_",
    max_duration: float = 30.0,
    min_words: int = 3,
) -> list[SplitStats]:
    """Kaldi dirs ``<data_dir>/<prefix>{train,dev,test}`` and ``<data_dir>/<prefix>prep_summary.tsv``.

    MyST's filters (duration, word count; no Whisper filter); train and dev drop audio
    too short for a CTC alignment, test keeps it (see :mod:`.screen`).
    """
    root = Path(corpus).resolve()
    speech = root / "kids"
    out = Path(data_dir).resolve()
    if out == root or root in out.parents:
        raise ValueError(f"output dir {out} is inside corpus {root}; corpora are read-only")
    if not speech.is_dir():
        raise FileNotFoundError(f"{speech} not found: {root} is not a mini_kids corpus (make_mini_kids writes it)")
    all_stats = []
    for split in KIDS_SPLITS:
        name = f"{prefix}{split}"
        cfg = ScreenConfig(max_duration=max_duration, min_words=min_words, max_wer=None,
                           too_short_for_ctc="keep" if split == "test" else "drop")
        stats = SplitStats(name)
        kept = [u for c in _candidates(speech / split) if (u := screen(c, cfg, stats, out / "audio_16k" / name)) is not None]
        if not kept:
            raise FileNotFoundError(f"{speech / split}: no usable utterances")
        write_data_dir(out / name, kept)
        logger.info("%s: kept %d utterances (%.3f h), dropped %d", name, stats.kept, stats.hours, sum(stats.dropped.values()))
        all_stats.append(stats)
    write_summary_tsv(all_stats, out / f"{prefix}prep_summary.tsv")
    return all_stats
