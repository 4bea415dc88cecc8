"""The embedded multilingual corpus: deterministic, split by speaker, six languages in their
own voices, grapheme and phoneme transcripts, phonemes round-trip through the token list."""

import hashlib
import re
import unicodedata

import pytest

from espnet_delta.data.multilingual_corpus import (
    LANGUAGES,
    VOCABULARY,
    make_multilingual_corpus,
    plan,
    read_utterances,
    write_data_dirs,
)
from conftest import MINI_CORPUS_SKIP_REASON, mini_corpus_tools_missing, needs_mini_corpus_tools

SCALE = 0.02  # sqrt(0.02) = 0.14: 1 speaker per split and language, 2 / 1 / 1 utterances each


def digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if mini_corpus_tools_missing():
        pytest.skip(MINI_CORPUS_SKIP_REASON)
    root = tmp_path_factory.mktemp("ml")
    return make_multilingual_corpus(root / "corpus", scale=SCALE, seed=0)


def test_plan_is_split_by_speaker_and_covers_six_languages():
    items = plan(scale=1.0, seed=0)
    assert sorted({it.lang for it in items}) == sorted(["en", "es", "de", "fr", "it", "nl"]) == sorted(LANGUAGES)
    splits = {}
    for it in items:
        splits.setdefault(it.speaker, set()).add(it.split)
        assert it.voice.name.split("+")[0] == LANGUAGES[it.lang]  # each language in its own voice
        assert set(it.text.split()) <= set(VOCABULARY[it.lang]) and 3 <= len(it.text.split()) <= 6
    assert all(len(s) == 1 for s in splits.values())  # no speaker in two splits
    # 6 languages x (6 train x 16 + 2 dev x 10 + 2 test x 10) utterances at scale 1
    assert len(items) == 6 * (6 * 16 + 2 * 10 + 2 * 10)
    assert len({(it.voice.name, it.voice.pitch, it.voice.speed) for it in items if it.lang == "de"}) > 1
    assert plan(1.0, 0) == items and plan(1.0, 1) != items


def test_vocabularies_are_lower_case_words_with_their_diacritics():
    for lang, words in VOCABULARY.items():
        assert 30 <= len(set(words)) <= 60, lang
        for w in words:
            assert w == w.lower() and re.fullmatch(r"\w+", w), (lang, w)
    assert "árbol" in VOCABULARY["es"] and "grün" in VOCABULARY["de"] and "fenêtre" in VOCABULARY["fr"]


@needs_mini_corpus_tools
def test_generation_is_deterministic(corpus, tmp_path):
    again = make_multilingual_corpus(tmp_path / "again", scale=SCALE, seed=0)
    assert digest(corpus) == digest(again) and len(digest(corpus)) == 24 + 3  # audio + tsv + phones + marker


@needs_mini_corpus_tools
def test_data_dirs_and_phonemes_round_trip_through_the_token_list(corpus, tmp_path):
    from espnet_delta.data.tokens import phone_token_list
    from espnet_delta.fileio import read_table

    counts = write_data_dirs(corpus, tmp_path / "data")
    assert counts == {"train": 12, "dev": 6, "test": 6}
    rows = {r["utt"]: r for r in read_utterances(corpus)}
    tokens = phone_token_list([tmp_path / "data" / s / "text.phn" for s in ("train", "dev", "test")])
    index = {t: i for i, t in enumerate(tokens)}
    speakers = {}
    for split in ("train", "dev", "test"):
        d = tmp_path / "data" / split
        text = {r.key: r.value for r in read_table(d / "text")}
        phn = {r.key: r.value for r in read_table(d / "text.phn")}
        lang = {r.key: r.value for r in read_table(d / "utt2lang")}
        assert list(text) == list(phn) == list(lang)
        for utt in text:
            assert text[utt] == rows[utt]["graphemes"] and lang[utt] == rows[utt]["lang"]
            ids = [index[p] for p in phn[utt].split()]  # every phone is one token, no <unk>
            assert " ".join(tokens[i] for i in ids) == phn[utt]
            assert not any(mark in phn[utt] for mark in ("ˈ", "ˌ", "(", "_"))
            speakers.setdefault(utt.split("-")[0], set()).add(split)
        assert sorted(set(lang.values())) == sorted(LANGUAGES)
    assert all(len(s) == 1 for s in speakers.values())
    # multi-character espeak phonemes stay one token (German has the long vowels, English the diphthongs)
    assert any(len(unicodedata.normalize("NFC", t)) > 1 for t in tokens[2:-1])


@needs_mini_corpus_tools
def test_each_voice_speaks_its_own_language():
    from espnet_delta.data.mini_corpus import phonemes

    # the same spelling, different phonemes per language voice
    assert phonemes("die", "de") != phonemes("die", "en-us")
    assert phonemes("casa", "es") != phonemes("casa", "fr-fr")


@needs_mini_corpus_tools
def test_cli_writes_corpus_and_data_dirs(corpus, tmp_path):
    from espnet_delta.bin.make_multilingual_corpus import main

    assert main(["--out", str(corpus), "--data_dir", str(tmp_path / "data"), "--scale", str(SCALE)]) == 0
    assert (tmp_path / "data" / "test" / "utt2lang").is_file() and (corpus / "phones.txt").is_file()
    assert main(["--out", str(corpus), "--only_data"]) == 2
