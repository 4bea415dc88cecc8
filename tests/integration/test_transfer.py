"""Augmentation task vectors, their transfer, speed perturbation and the second child corpus."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from conftest import needs_mini_corpus_tools
from espnet_delta.data.kaldi_dir import Utterance, read_data_dir, write_data_dir
from espnet_delta.data.speed_perturb import factor_tag, speed_perturb_dir
from espnet_delta.merge.transfer import apply_task_vector, task_vector, transfer_file
from espnet_delta.recipe.transfer_stage import read_best, train_steps

# ------------------------------------------------------------------ task vectors


def _state(w, b, steps=7) -> dict:
    return {"w": torch.tensor(w), "b": torch.tensor(b), "num_batches_tracked": torch.tensor(steps)}


def test_zero_task_vector_is_identity() -> None:
    target = _state([[0.1, -0.0], [3.0, -7.25]], [1e-8], steps=3)
    zero = {"w": torch.zeros(2, 2), "b": torch.zeros(1)}
    for scale in (0.0, 0.5, 1.0, 3.0):
        out = apply_task_vector(target, zero, scale)
        assert out.keys() == target.keys()
        for k in target:
            assert torch.equal(out[k], target[k]) and out[k].dtype == target[k].dtype, (scale, k)
    # scale 0 with a non-zero task vector also leaves the target as it is
    out = apply_task_vector(target, {"w": torch.ones(2, 2), "b": torch.ones(1)}, 0.0)
    assert all(torch.equal(out[k], target[k]) for k in target)


def test_task_vector_is_aug_minus_orig_by_hand() -> None:
    aug = _state([[1.5, -2.0], [0.25, 4.0]], [0.5], steps=9)
    orig = _state([[1.0, -1.0], [0.5, 4.0]], [0.75], steps=4)
    tau = task_vector(aug, orig)
    assert set(tau) == {"w", "b"}  # integer buffers have no task vector
    assert torch.equal(tau["w"], torch.tensor([[0.5, -1.0], [-0.25, 0.0]]))
    assert torch.equal(tau["b"], torch.tensor([-0.25]))
    target = _state([[2.0, 2.0], [2.0, 2.0]], [1.0], steps=11)
    out = apply_task_vector(target, tau, 2.0)  # target + 2 * tau
    assert torch.equal(out["w"], torch.tensor([[3.0, 0.0], [1.5, 2.0]]))
    assert torch.equal(out["b"], torch.tensor([0.5]))
    assert int(out["num_batches_tracked"]) == 11  # the target's


def test_task_vector_refuses_mismatches() -> None:
    aug = _state([[1.0, 2.0]], [0.0])
    with pytest.raises(KeyError, match="'b'"):
        task_vector(aug, {"w": torch.zeros(1, 2), "num_batches_tracked": torch.tensor(1)})
    with pytest.raises(ValueError, match="'w'"):
        task_vector(aug, _state([[1.0], [2.0]], [0.0]))
    with pytest.raises(KeyError, match="'extra'"):
        apply_task_vector(_state([[1.0, 2.0]], [0.0]), {"w": torch.zeros(1, 2), "b": torch.zeros(1), "extra": torch.zeros(1)}, 1.0)


def test_transfer_file(tmp_path) -> None:
    paths = {}
    for name, state in {"target": _state([[1.0, 1.0]], [0.0]), "aug": _state([[0.5, 3.0]], [1.0]),
                        "orig": _state([[0.25, 1.0]], [2.0])}.items():
        paths[name] = tmp_path / f"{name}.pth"
        torch.save(state, paths[name])
    out = transfer_file(paths["target"], paths["aug"], paths["orig"], 0.5, tmp_path / "out" / "model.pth")
    got = torch.load(out, weights_only=True)
    # 1 + 0.5 * (0.5 - 0.25) = 1.125; 1 + 0.5 * (3 - 1) = 2; 0 + 0.5 * (1 - 2) = -0.5
    assert torch.equal(got["w"], torch.tensor([[1.125, 2.0]]))
    assert torch.equal(got["b"], torch.tensor([-0.5]))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["model.pth"]  # no temporary left


def test_grid_and_log_readers(tmp_path) -> None:
    (tmp_path / "transfer_grid.tsv").write_text("lambda\tdev_wer\n0.25\t70.00\n0.5\t65.00\n# best: lambda=0.5\n")
    assert read_best(tmp_path / "transfer_grid.tsv") == "0.5"
    assert read_best(tmp_path / "missing.tsv") is None
    job = tmp_path / "job"
    job.mkdir()
    (job / "train.log").write_text(
        "x (trainer:394) INFO: 1epoch results: [train] loss=3, total_count=50, [valid] loss=2, total_count=9\n"
        "x (trainer:394) INFO: 2epoch results: [train] loss=2, total_count=100, [valid] loss=1, total_count=18\n")
    assert train_steps(job) == 100


# ------------------------------------------------------------------ speed perturbation


def _sine(n: int, freq: float = 1000.0) -> np.ndarray:
    return (0.5 * np.sin(2 * math.pi * freq * np.arange(n) / 16000)).astype(np.float32)


def _peak_hz(wav: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.argmax(spectrum)) * 16000 / len(wav)


@pytest.fixture()
def two_utts(tmp_path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    utts = []
    for utt, n in (("spk1-a", 16000), ("spk1-b", 8000)):
        soundfile.write(str(corpus / f"{utt}.flac"), _sine(n), 16000, subtype="PCM_16")
        utts.append(Utterance(utt, "spk1", str(corpus / f"{utt}.flac"), "HELLO THERE", n / 16000))
    write_data_dir(tmp_path / "data" / "train", utts)
    return tmp_path


def test_speed_perturbation_lengths_ids_and_pitch(two_utts) -> None:
    data = two_utts / "data"
    before = sorted(p.name for p in (two_utts / "corpus").iterdir())
    speed_perturb_dir(data / "train", data / "train_sp", [0.9, 1.0, 1.1])
    got = {u.utt_id: u for u in read_data_dir(data / "train_sp")}
    # N samples at factor f become ceil(N / f): 16000 -> 17778 (0.9), 14546 (1.1); 8000 -> 8889, 7273
    expected = {"sp0.9-spk1-a": 17778, "sp0.9-spk1-b": 8889, "sp1.0-spk1-a": 16000, "sp1.0-spk1-b": 8000,
                "sp1.1-spk1-a": 14546, "sp1.1-spk1-b": 7273}
    assert set(got) == set(expected)
    for utt, n in expected.items():
        u = got[utt]
        assert soundfile.info(u.wav).frames == n, utt
        assert u.duration == pytest.approx(n / 16000, abs=5e-4)
        assert u.spk_id == utt[: utt.index("-") + 1] + "spk1" and u.text == "HELLO THERE"
    assert got["sp1.0-spk1-a"].wav == str(two_utts / "corpus" / "spk1-a.flac")  # factor 1.0: the original file
    assert sorted(p.name for p in (two_utts / "corpus").iterdir()) == before  # nothing written beside the source
    # played 0.9 / 1.1 times as fast, a 1000 Hz tone becomes 900 / 1100 Hz (FFT bin width ~0.9 Hz)
    assert _peak_hz(soundfile.read(got["sp0.9-spk1-a"].wav)[0]) == pytest.approx(900, abs=2)
    assert _peak_hz(soundfile.read(got["sp1.1-spk1-a"].wav)[0]) == pytest.approx(1100, abs=2)
    spk2utt = (data / "train_sp" / "spk2utt").read_text().split("\n")[0].split()
    assert spk2utt == ["sp0.9-spk1", "sp0.9-spk1-a", "sp0.9-spk1-b"]


def test_speed_perturbation_resumes_and_refuses(two_utts) -> None:
    data = two_utts / "data"
    speed_perturb_dir(data / "train", data / "train_sp", [0.9, 1.0])
    audio = data / "audio_sp" / "train_sp" / "sp0.9" / "spk1-a.flac"
    mtime = audio.stat().st_mtime_ns
    speed_perturb_dir(data / "train", data / "train_sp", [0.9, 1.0])
    assert audio.stat().st_mtime_ns == mtime  # finished audio is reused
    with pytest.raises(ValueError, match="inside the data dir"):
        speed_perturb_dir(data / "train", data / "x_sp", [0.9], audio_dir=data / "x_sp" / "audio")
    with pytest.raises(ValueError, match="whole number"):
        speed_perturb_dir(data / "train", data / "y_sp", [1 / 3])
    assert (factor_tag(1), factor_tag(0.9), factor_tag(1.05)) == ("1.0", "0.9", "1.05")


# ------------------------------------------------------------------ the second child corpus

CONTENT_STOP = {"THE", "A", "I", "IS", "TO", "IN", "AND", "WE", "CAN", "IT", "YOU", "THEY", "SEE", "ON", "AT"}


@needs_mini_corpus_tools
def test_second_corpus_differs_from_mini_myst(tmp_path) -> None:
    from espnet_delta.data.mini_corpus import make_mini_corpus
    from espnet_delta.data.mini_kids import make_mini_kids, prepare_kids
    from espnet_delta.data.prepare import PrepConfig, prepare_data

    myst = make_mini_corpus(tmp_path / "mini", scale=0.01, nj=2)
    prepare_data(tmp_path / "data", myst.myst_root, config=PrepConfig(subset_hours=()))
    kids = make_mini_kids(tmp_path / "kids_corpus", scale=0.05, nj=2)
    prepare_kids(kids, tmp_path / "data")
    assert (tmp_path / "data" / "kids_prep_summary.tsv").is_file()
    k_utts = [u for s in ("train", "dev", "test") for u in read_data_dir(tmp_path / "data" / f"kids_{s}")]
    m_utts = [u for s in ("train", "dev", "test") for u in read_data_dir(tmp_path / "data" / s)]
    # scale 0.05 (x sqrt(0.05) = 0.224, rounded): speakers 20, 4, 5 -> 4, 1, 1; utterances 16, 15, 16 -> 4, 3, 4
    assert len({u.spk_id for u in k_utts}) == 6 and len(k_utts) == 4 * 4 + 3 + 4
    assert not {u.spk_id for u in k_utts} & {u.spk_id for u in m_utts}
    k_words = {w for u in k_utts for w in u.text.split()} - CONTENT_STOP
    m_words = {w for u in m_utts for w in u.text.split()} - CONTENT_STOP
    assert len(k_words) >= 15 and not k_words & m_words
    assert all(Path(u.wav).is_relative_to(kids) for u in k_utts)
    # slower, word-by-word reading: fewer words per second than mini_myst's children
    rate = {name: sum(len(u.text.split()) for u in utts) / sum(u.duration for u in utts)
            for name, utts in (("kids", k_utts), ("myst", m_utts))}
    assert rate["kids"] < 0.8 * rate["myst"], rate
    with pytest.raises(ValueError, match="read-only"):
        prepare_kids(kids, kids / "data")


def test_second_corpus_spells_with_mini_myst_letters() -> None:
    """A model with mini_myst's character token list can spell every mini_kids word (no <unk>)."""
    from espnet_delta.data import mini_corpus
    from espnet_delta.data.mini_kids import KIDS_SLOTS, KIDS_TEMPLATES

    def letters(slots, templates) -> set:
        words = [w for ws in slots.values() for w in ws] + [w for t in templates for w in t.split() if "{" not in w]
        return set("".join(words))

    kids = letters(KIDS_SLOTS, KIDS_TEMPLATES)
    assert kids <= letters(mini_corpus._SLOTS, mini_corpus._TEMPLATES)
    assert not kids & set("jqxz")
