"""The embedded multilingual corpus ``mini_multilingual``: synthetic, offline, deterministic.

Six languages (en, es, de, fr, it, nl) spoken by espeak-ng, each language's own voice
(checked: no word of a sentence is switched to another language's phonemes) with
several voice variants, pitches and speeds per language; short sentences of 3-6 words
drawn from a small per-language vocabulary (:data:`VOCABULARY`, ~47 common words each).
Speakers (one voice setting each) are split train/dev/test, so no voice of dev or test
is heard in training. At ``scale=1`` about 25 minutes of audio, built in about a minute
on two cores; ``scale`` shrinks speakers and utterances per speaker (each by
``sqrt(scale)``) for tests.

Per utterance:

* graphemes: the sentence, lower case, no punctuation, diacritics kept (Kaldi ``text``);
* phonemes: espeak-ng's own phonemes of exactly what it speaks (``espeak-ng -q --ipa
  --sep=_ -v <language>``), one token per espeak phoneme (``aɪ``, ``ɑː``, ``tʃ`` stay
  single tokens), stress marks ``ˈ ˌ`` removed, no word boundaries, space-separated
  (``text.phn``), as :func:`espnet_delta.data.mini_corpus.phonemes` does for mini_myst;
* the language (``utt2lang``).

Layout: ``<out>/audio/<lang>/<speaker>/<utt>.flac`` (16 kHz mono FLAC),
``<out>/utterances.tsv`` (utt, speaker, lang, split, voice, graphemes, phonemes) and
``<out>/phones.txt`` (``<utt> <phones>``, the corpus-wide phone table that the stage
engine's ``--phone_text`` reads, as for mini_myst); :func:`write_data_dirs` turns it
into Kaldi dirs. The same ``scale``/``seed`` give the
same bytes (espeak-ng and sox are deterministic; sox runs with ``-R -D``). The corpus
is built in a temporary sibling folder and renamed into place with a marker written
last; a complete corpus with the same parameters is left alone.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

from espnet_delta.data.kaldi_dir import Utterance, write_data_dir
from espnet_delta.data.mini_corpus import phonemes
from espnet_delta.fileio import read_table, write_text_atomic

__all__ = ["LANGUAGES", "VOCABULARY", "make_multilingual_corpus", "plan", "read_utterances", "write_data_dirs"]

logger = logging.getLogger(__name__)

MARKER = ".complete.json"
UTTERANCES = "utterances.tsv"
PHONES = "phones.txt"
SPLITS = ("train", "dev", "test")
VERSION = 1  # bump when the generated content changes

#: language -> espeak-ng voice (its own language's voice; the variant is added per speaker)
LANGUAGES: Dict[str, str] = {"en": "en-us", "es": "es", "de": "de", "fr": "fr-fr", "it": "it", "nl": "nl"}

VOCABULARY: Dict[str, tuple] = {
    "en": tuple("the a cat dog house water tree big small red green blue good day night sun moon book table chair "
                "door window car road city friend mother father child school eat drink run walk see read write happy "
                "cold warm apple bread milk fish bird river".split()),
    "es": tuple("el la casa perro gato agua árbol grande pequeño rojo verde azul bueno día noche sol luna libro mesa "
                "silla puerta ventana coche camino ciudad amigo madre padre niño escuela comer beber correr caminar ver "
                "leer escribir feliz frío caliente manzana pan leche pescado pájaro río también corazón".split()),
    "de": tuple("der die das haus hund katze wasser baum klein rot grün blau gut tag nacht sonne mond buch tisch stuhl "
                "tür fenster auto weg stadt freund mutter vater kind schule essen trinken laufen gehen sehen lesen "
                "schreiben glücklich kalt warm apfel brot milch fisch vogel fluss schön müde".split()),
    "fr": tuple("le la maison chien chat eau arbre grand petit rouge vert bleu bon jour nuit soleil lune livre table "
                "chaise porte fenêtre voiture route ville ami mère père enfant école manger boire courir marcher voir "
                "lire écrire heureux froid chaud pomme pain lait poisson oiseau rivière très été".split()),
    "it": tuple("il la casa cane gatto acqua albero grande piccolo rosso verde azzurro buono giorno notte sole luna "
                "libro tavolo sedia porta finestra macchina strada città amico madre padre bambino scuola mangiare bere "
                "correre camminare vedere leggere scrivere felice freddo caldo mela pane latte pesce uccello fiume "
                "perché più".split()),
    "nl": tuple("de het huis hond kat water boom groot klein rood groen blauw goed dag nacht zon maan boek tafel stoel "
                "deur raam auto weg stad vriend moeder vader kind school eten drinken lopen zien lezen schrijven blij "
                "koud warm appel brood melk vis vogel rivier mooi fiets".split()),
}

_VARIANTS = ("m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "f4")
#: split -> (speakers per language, utterances per speaker) at scale 1
_SPLITS = {"train": (6, 16), "dev": (2, 10), "test": (2, 10)}


@dataclass(frozen=True)
class Voice:
    name: str  # espeak-ng -v, language voice + variant
    pitch: int
    speed: int


@dataclass(frozen=True)
class Item:
    utt: str
    speaker: str
    lang: str
    split: str
    voice: Voice
    text: str  # graphemes, exactly what espeak-ng speaks


def _scaled(n: int, scale: float) -> int:
    return max(1, int(n * math.sqrt(scale) + 0.5))


def plan(scale: float = 1.0, seed: int = 0) -> List[Item]:
    """Every utterance to synthesise, in a fixed order (languages, splits, speakers)."""
    rng = random.Random(seed)
    items: List[Item] = []
    for lang, base_voice in LANGUAGES.items():
        words = VOCABULARY[lang]
        n = 0
        for split in SPLITS:
            speakers, per_speaker = _SPLITS[split]
            for _ in range(_scaled(speakers, scale)):
                n += 1
                speaker = f"{lang}{n:02d}"
                voice = Voice(f"{base_voice}+{rng.choice(_VARIANTS)}", rng.randint(25, 75), rng.randint(140, 180))
                for k in range(_scaled(per_speaker, scale)):
                    text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 6)))
                    items.append(Item(f"{speaker}-{k:03d}", speaker, lang, split, voice, text))
    return items


def sentence_phonemes(item: Item) -> str:
    """Space-separated phonemes of ``item``; refuses espeak-ng's switches to another language."""
    phones = phonemes(item.text, item.voice.name)
    if "(" in phones:
        raise RuntimeError(f"espeak-ng switched language inside {item.text!r} ({item.voice.name}): {phones}")
    return phones


def _synthesise(root: Path, item: Item) -> None:
    """espeak-ng (22.05 kHz WAV on stdout) -> sox -> 16 kHz mono 16-bit FLAC."""
    v = item.voice
    tts = ["espeak-ng", "-v", v.name, "-p", str(v.pitch), "-s", str(v.speed), "--stdout", item.text]
    wav = subprocess.run(tts, check=True, capture_output=True).stdout
    out = root / audio_path(item)
    out.parent.mkdir(parents=True, exist_ok=True)
    sox = ["sox", "-R", "-D", "-t", "wav", "-", "-r", "16000", "-c", "1", "-b", "16", "-t", "flac", str(out)]
    subprocess.run(sox, input=wav, check=True, capture_output=True)


def audio_path(item: Item) -> Path:
    return Path("audio", item.lang, item.speaker, f"{item.utt}.flac")


def _params(scale: float, seed: int) -> dict:
    return {"version": VERSION, "scale": scale, "seed": seed}


def _complete(root: Path, params: dict) -> bool:
    marker = root / MARKER
    if not root.exists():
        return False
    if marker.is_file():
        try:
            found = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found = {}
        if all(found.get(k) == v for k, v in params.items()):
            return True
        logger.info("%s was generated with other parameters (%s); regenerating", root, found)
        shutil.rmtree(root)
        return False
    if any(root.iterdir()):
        raise FileExistsError(f"{root} exists, is not empty and is not a complete multilingual corpus; remove it")
    root.rmdir()
    return False


def make_multilingual_corpus(out: str | os.PathLike, scale: float = 1.0, seed: int = 0, nj: int = 2) -> Path:
    """Generate (or reuse) the corpus at ``out``; see the module docstring. Returns its root."""
    root = Path(out).resolve()
    params = _params(scale, seed)
    if _complete(root, params):
        logger.info("multilingual corpus already complete at %s", root)
        return root
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is required to build the multilingual corpus (run `make install`)")
    items = plan(scale, seed)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp.", dir=root.parent))
    try:
        with ThreadPoolExecutor(max_workers=max(1, nj)) as pool:
            phones = list(pool.map(sentence_phonemes, items))
            list(pool.map(lambda it: _synthesise(tmp, it), items))
        rows = ["utt\tspeaker\tlang\tsplit\tvoice\tgraphemes\tphonemes\n"]
        rows += [f"{it.utt}\t{it.speaker}\t{it.lang}\t{it.split}\t{it.voice.name} -p {it.voice.pitch} -s {it.voice.speed}"
                 f"\t{it.text}\t{p}\n" for it, p in zip(items, phones)]
        (tmp / UTTERANCES).write_text("".join(rows), encoding="utf-8")
        (tmp / PHONES).write_text("".join(f"{it.utt} {p}\n" for it, p in zip(items, phones)), encoding="utf-8")
        info = {**params, "utterances": len(items), "languages": sorted(LANGUAGES)}
        (tmp / MARKER).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("multilingual corpus: %d utterances in %d languages at %s", len(items), len(LANGUAGES), root)
    return root


def read_utterances(root: Path) -> List[Dict[str, str]]:
    """The rows of ``utterances.tsv`` as dicts, in file order."""
    path = Path(root) / UTTERANCES
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a multilingual corpus (run make_multilingual_corpus first)")
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:]]
    bad = [i + 2 for i, r in enumerate(rows) if len(r) != len(header)]
    if bad:
        raise ValueError(f"{path}: line(s) {bad[:5]} do not have {len(header)} tab-separated fields")
    return rows


def write_data_dirs(root: Path, data_dir: Path) -> Dict[str, int]:
    """Kaldi dirs ``<data_dir>/{train,dev,test}`` of the corpus at ``root``: wav.scp, text
    (graphemes), text.phn (phonemes), utt2lang, utt2spk, spk2utt, utt2dur. Returns utterances per split."""
    import soundfile

    rows = read_utterances(root)
    counts = {}
    for split in SPLITS:
        chosen = {r["utt"]: r for r in rows if r["split"] == split}
        utts = []
        for r in chosen.values():
            wav = (Path(root) / "audio" / r["lang"] / r["speaker"] / f"{r['utt']}.flac").resolve()
            utts.append(Utterance(r["utt"], r["speaker"], str(wav), r["graphemes"], soundfile.info(str(wav)).duration))
        out = write_data_dir(Path(data_dir) / split, utts)
        ids = [row.key for row in read_table(out / "text", what="text")]
        write_text_atomic(out / "text.phn", "".join(f"{u} {chosen[u]['phonemes']}\n" for u in ids))
        write_text_atomic(out / "utt2lang", "".join(f"{u} {chosen[u]['lang']}\n" for u in ids))
        counts[split] = len(utts)
    logger.info("wrote data dirs (%s) to %s: %s", ", ".join(SPLITS), data_dir, counts)
    return counts
