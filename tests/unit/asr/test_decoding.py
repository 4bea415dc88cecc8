"""One decoding loop (espnet_delta.asr.decoding): hypothesis files, resume, scoring per unit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from espnet_delta.asr import decoding
from espnet_delta.asr.decoding import DecodeOptions, decode_job

TOKENS = ["<blank>", "<unk>", "A", "B", "<space>", "<sos/eos>"]
#: the best path of every utterance: A A | A <space> <space> B | -> "AA B" (words), "A A <space> B" (phones)
PATH = [2, 2, 0, 2, 4, 4, 3, 0]


class FakeModel:
    """What greedy decoding needs of an ESPnet model: the same frame scores for every input."""

    token_list = TOKENS

    class ctc:  # noqa: N801  (ESPnet's attribute name)
        @staticmethod
        def argmax(x):
            return x.argmax(-1)

    def eval(self):
        return self

    def encode(self, speech, lengths):
        enc = torch.nn.functional.one_hot(torch.tensor(PATH), len(TOKENS)).float()[None].repeat(len(lengths), 1, 1)
        return enc, torch.tensor([len(PATH)] * len(lengths))


@pytest.fixture
def recipe(tmp_path):
    data = tmp_path / "data" / "test"
    data.mkdir(parents=True)
    for utt in ("u2", "u1"):
        soundfile.write(data / f"{utt}.wav", np.zeros(1600 if utt == "u1" else 3200, dtype=np.float32), 16000)
    (data / "wav.scp").write_text(f"u2 {data / 'u2.wav'}\nu1 {data / 'u1.wav'}\n")
    (data / "text").write_text("u1 AA B\nu2 AA C\n")
    (data / "text.phn").write_text("u1 A A <space> B\nu2 A <space> B\n")
    job = tmp_path / "exp" / "ft_x"
    job.mkdir(parents=True)
    return tmp_path, job, data / "wav.scp"


def test_greedy_words_are_written_sorted_scored_and_not_decoded_again(recipe, monkeypatch):
    root, job, scp = recipe
    loads = []
    monkeypatch.setattr(decoding, "load_model", lambda config, model, device: loads.append(model) or FakeModel())
    options = DecodeOptions(batch_size=1, ref_dir=root / "data", use_sctk=False)
    summaries = decode_job(job, "m.pth", [("test", scp)], options)
    assert (job / "decode" / "test" / "text").read_text() == "u1 AA B\nu2 AA B\n"
    assert loads == [job / "m.pth"]
    # u1 right; u2 one substitution (B for C) in 2 words -> 1 error in 4 words = 25 %
    assert summaries["test"].counts.words == 4 and summaries["test"].wer == pytest.approx(25.0)
    assert (job / "decode" / "test" / "score_wer" / "score.json").is_file()

    monkeypatch.setattr(decoding, "load_model", lambda *a: pytest.fail("existing hypotheses were decoded again"))
    again = decode_job(job, "m.pth", [("test", scp)], options)
    assert again["test"].wer == pytest.approx(25.0)  # scored again from the file


def test_phones_are_scored_against_text_phn(recipe, monkeypatch):
    root, job, scp = recipe
    monkeypatch.setattr(decoding, "load_model", lambda *a: FakeModel())
    summaries = decode_job(job, "m.pth", [("test", scp)], DecodeOptions(unit="phn", batch_size=2,
                                                                        ref_dir=root / "data", use_sctk=False))
    assert (job / "decode" / "test" / "text").read_text() == "u1 A A <space> B\nu2 A A <space> B\n"
    # u1 exact (4 phones); u2 "A <space> B" vs "A A <space> B": one insertion in 3 phones -> 1/7
    assert summaries["test"].counts.words == 7 and summaries["test"].wer == pytest.approx(100 / 7)
    assert (job / "decode" / "test" / "score_per" / "score.json").is_file()
    assert not (job / "decode" / "test" / "score_wer").exists()


def test_options_refuse_beam_search_of_phones_or_features():
    with pytest.raises(ValueError, match="beam search decodes waveforms into words"):
        DecodeOptions(beam=True, unit="phn")
    with pytest.raises(ValueError, match="beam search decodes waveforms into words"):
        DecodeOptions(beam=True, input_type="kaldi_ark")
    with pytest.raises(ValueError, match="set beam=True"):
        DecodeOptions(decode_config=Path("decode.yaml"))
    with pytest.raises(ValueError, match="unit="):
        DecodeOptions(unit="word")
