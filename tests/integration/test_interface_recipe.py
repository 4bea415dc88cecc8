"""The recipe side of the layer interfaces: phone targets (stage 2), the interface job
configs of the mini recipe (stage 4) with their trainable parameter counts, phone
decoding and PER scoring (stage 5), the RESULTS.md section."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import torch
import yaml

from espnet_delta.data.tokens import phone_token_list
from espnet_delta.recipe import interface_results, make_phone_text, plan
from espnet_delta.recipe.names import UNIT_CHECKPOINTS
from espnet_delta.ssl.interfaces import FIXED_PREFIX
from espnet_delta.ssl.tiny import TinyConfig, make_tiny_upstream
from conftest import perturb_all, write_espnet_checkpoint

RECIPE = Path(__file__).resolve().parents[2] / "egs2" / "mini_myst" / "asr1"

# ------------------------------------------------------------------ stage 2: phone targets


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_phone_text_per_set_and_token_list(tmp_path):
    phones = write(tmp_path / "phones.txt",
                   "u3 ð ə s ʌ n\n"
                   "u1 aɪ s iː\n"
                   "u9 z z z\n"           # in no data set: ignored
                   "u2 ð ə  a: t̪\n"       # two spaces: written back with one
                   "d1 s ʌ n z\n")
    data = tmp_path / "data"
    write(data / "train" / "text", "u1 I SEE\nu2 THE ART\nu3 THE SUN\n")
    write(data / "dev" / "text", "d1 SUNS\n")
    token_list = tmp_path / "token_list" / "phn" / "tokens.txt"
    make_phone_text.main(["--phones", str(phones), "--data_dir", str(data), "--sets", "train", "dev",
                          "--train_set", "train", "--token_list", str(token_list)])
    # in the order of each set's text
    assert (data / "train" / "text.phn").read_text(encoding="utf-8") == "u1 aɪ s iː\nu2 ð ə a: t̪\nu3 ð ə s ʌ n\n"
    assert (data / "dev" / "text.phn").read_text(encoding="utf-8") == "d1 s ʌ n z\n"
    # train counts: ð 2, ə 2, s 2, then once each in code-point order: a: aɪ iː n t̪ ʌ
    # ("a:" < "aɪ" as ':' U+003A < 'ɪ' U+026A; 'n' U+006E < 't' < 'ʌ' U+028C); dev phones are not in it
    expected = ["<blank>", "<unk>", "s", "ð", "ə", "a:", "aɪ", "iː", "n", "t̪", "ʌ", "<sos/eos>"]
    assert token_list.read_text(encoding="utf-8").splitlines() == expected


def test_phone_text_missing_utterance_is_named(tmp_path, caplog):
    phones = write(tmp_path / "phones.txt", "u1 a b\n")
    data = tmp_path / "data"
    write(data / "train" / "text", "u1 A B\nu7 C\n")
    with pytest.raises(SystemExit) as exit_info:  # one logged error line, no traceback
        make_phone_text.main(["--phones", str(phones), "--data_dir", str(data), "--sets", "train",
                              "--train_set", "train", "--token_list", str(tmp_path / "t.txt")])
    assert exit_info.value.code == 1
    assert re.search(r"no phones for 1 utterance\(s\) of .*train/text, first 'u7'", caplog.text)


def test_phone_token_list_refuses_reserved_tokens(tmp_path):
    text = write(tmp_path / "text.phn", "u1 a <unk> b\n")
    with pytest.raises(ValueError, match="reserved"):
        phone_token_list([text])


# ------------------------------------------------------------------ stage 5: phones and PER


def test_per_scores_phones_as_written(tmp_path):
    from espnet_delta.scoring import normalize_phones, score

    ref = write(tmp_path / "ref", "u1 ɪ f a: t̪\nu2 ð ə s ʌ n\n")
    hyp = write(tmp_path / "hyp", "u1 ɪ f a t\nu2 ð ə ʌ n n\n")
    summary = score(ref, hyp, tmp_path / "score_per", use_sctk=False, normalizer=normalize_phones)
    # u1: a: -> a, t̪ -> t: 2 substitutions; u2: s deleted, n inserted (sclite costs: D+I = 6 < 2 S = 8)
    c = summary.counts
    assert (c.words, c.correct, c.substitutions, c.deletions, c.insertions) == (9, 6, 2, 1, 1)
    assert summary.wer == pytest.approx(100 * 4 / 9)
    # word normalisation would merge a:/a and t̪/t and hide both substitutions
    words = score(ref, hyp, tmp_path / "score_wer", use_sctk=False)
    assert words.counts.substitutions == 0


def test_phone_decoding_joins_collapsed_tokens_with_spaces(tmp_path):
    import soundfile

    from espnet_delta.asr.decoding import decode_greedy

    class FakeCTC:
        def argmax(self, x):
            return x.argmax(-1)

    class FakeModel:
        """encode() returns the same frame scores for every input: the best path is fixed."""
        token_list = ["<blank>", "<unk>", "aɪ", "t̪", "ə", "<sos/eos>"]
        ctc = FakeCTC()
        path = [2, 2, 0, 3, 3, 0, 0, 2, 4, 4]

        def eval(self):
            return self

        def encode(self, speech, lengths):
            enc = torch.nn.functional.one_hot(torch.tensor(self.path), 6).float()[None].repeat(len(lengths), 1, 1)
            return enc, torch.tensor([len(self.path)] * len(lengths))

    wav = tmp_path / "a.wav"
    soundfile.write(wav, torch.zeros(1600).numpy(), 16000)
    hyps = decode_greedy(FakeModel(), [("u1", str(wav))], "sound", 1, "cpu", unit="phn")
    # collapse repeats, drop blanks: aɪ t̪ aɪ ə (a blank separates the two aɪ)
    assert hyps == {"u1": "aɪ t̪ aɪ ə"}


# ------------------------------------------------------------------ stage 4: interface jobs

# The mini recipe's tiny upstreams: 3 transformer layers of 64 -> L = 4 hidden states, D = 64.
MINI = TinyConfig(num_layers=3, embed_dim=64, ffn_dim=128, num_heads=4, conv_channels=32)
L, D = 4, 64


def lstm(inp: int, hidden: int) -> int:
    """One direction of a PyTorch LSTM: 4 gates x (input + recurrent weights + 2 biases)."""
    return 4 * hidden * inp + 4 * hidden * hidden + 8 * hidden


def bilstm_downstream(inp: int, hidden: int, out: int = 64) -> int:
    """ESPnet's RNNP, 2 layers: BiLSTM(inp -> hidden) + Linear(2 hidden, out), then BiLSTM(out -> hidden) + Linear."""
    return 2 * lstm(inp, hidden) + (2 * hidden * out + out) + 2 * lstm(out, hidden) + (2 * hidden * out + out)


def test_downstream_arithmetic():
    assert bilstm_downstream(64, 64) == 149_632
    assert bilstm_downstream(64, 67) == 159_856


# frontend (interface) parameters by hand, L = 4, D = 64:
#   hconv: floor(log3 4) = 1 conv, layer axis 4 -> floor((4 + 4 - 5) / 3) + 1 = 2, channels 64 // 2 = 32:
#          64 * 32 * 5 + 32 = 10,272;  concat: Linear(4 * 64, 64) = 256 * 64 + 64 = 16,448
#   fusion: one hconv per stream (reference, delta of HuBERT) + LayerNorm(64 + 64) of the head
EXPECTED_FRONTEND = {
    "last": 0, "weighted_sum": L, "weighted_sum_ln": L, "hconv": 10_272, "concat": 16_448,
    # pca: no trainable parameters (its fitted projection is fixed buffers);
    # cls_pooling: query 64 + key 64*64 (no bias) + value 64*64+64 + output 64*64+64
    "pca": 0, "cls_pooling": 64 + 64 * 64 + (64 * 64 + 64) + (64 * 64 + 64),
    "weighted_sum_big": L, "wavlm+dhubert_hconv": 2 * 10_272 + 2 * 128,
}
# pca's fixed buffers: mean 4*64, projection (4*64) x 64, frame count 1 (in the checkpoint, not trained)
EXPECTED_FIXED = {"pca": 256 + 256 * 64 + 1}
EXPECTED_DOWNSTREAM = {name: bilstm_downstream(64, 64) for name in EXPECTED_FRONTEND}
EXPECTED_DOWNSTREAM["weighted_sum_big"] = bilstm_downstream(64, 67)
EXPECTED_DOWNSTREAM["wavlm+dhubert_hconv"] = bilstm_downstream(128, 64)


@pytest.fixture(scope="module")
def mini_setup(tmp_path_factory):
    """Upstream table, fine-tuned checkpoints, data and token lists of a recipe in miniature."""
    root = tmp_path_factory.mktemp("ifrecipe")
    table = {}
    for k, arch in enumerate(("wavlm", "hubert")):
        pt = make_tiny_upstream(arch, root / "up" / f"{arch}.pt", seed=k, config=MINI)
        table[arch] = {"upstream": f"{arch}_local", "path_or_url": str(pt)}
        write_espnet_checkpoint(pt, write(root / "exp" / f"ft_{arch}" / "x", "").parent / "valid.wer_ctc.best.pth",
                                perturb_all(seed=k))
    upstream_conf = root / "upstreams.yaml"
    upstream_conf.write_text(yaml.safe_dump(table))
    for s in ("train", "dev"):
        write(root / "data" / s / "wav.scp", "".join(f"{s}{i} /nonexistent/{s}{i}.wav\n" for i in range(40)))
        write(root / "data" / s / "text", "".join(f"{s}{i} A B\n" for i in range(40)))
        write(root / "shapes" / s / "speech_shape", "".join(f"{s}{i} {16000 + i}\n" for i in range(40)))
    tokens = {"char": ["<blank>", "<unk>", "A", "<space>", "B", "<sos/eos>"],
              "phn": ["<blank>", "<unk>", "a", "b", "aɪ", "t̪", "ə", "<sos/eos>"]}
    lists = {u: write(root / "token_list" / u / "tokens.txt", "\n".join(t) + "\n") for u, t in tokens.items()}
    return root, upstream_conf, lists, {u: len(t) for u, t in tokens.items()}


def plan_interface(systems, base, upstream_conf, data, shapes, unit, token_list, exp, upstreams="wavlm hubert"):
    """The planner's interface family, rendering (exceptions raised as they are)."""
    args = plan.get_parser().parse_args([
        "interface", "--interface_systems", str(systems), "--interface_config", str(base), "--upstream_conf", str(upstream_conf),
        "--upstreams", upstreams, "--data_dir", str(data), "--shape_dir", str(shapes), "--train_set", "train",
        "--valid_set", "dev", "--interface_units", unit, f"--{'phone_' if unit == 'phn' else ''}token_list", str(token_list),
        "--exp_dir", str(exp)])
    return plan.run(args)


def render(root, upstream_conf, token_list, unit):
    plan_interface(RECIPE / "conf" / "interface_systems.yaml", RECIPE / "conf" / "interface.yaml", upstream_conf,
                   root / "data", root / "shapes", unit, token_list, root / "exp")
    return {p.name: yaml.safe_load((p / "train.yaml").read_text()) for p in (root / "exp").glob(f"if_*_{unit}")}


def test_rendered_configs(mini_setup):
    root, upstream_conf, lists, _ = mini_setup
    char = render(root, upstream_conf, lists["char"], "char")
    phn = render(root, upstream_conf, lists["phn"], "phn")
    assert sorted(char) == sorted(f"if_{n}_char" for n in EXPECTED_FRONTEND)
    hconv = char["if_hconv_char"]
    assert hconv["frontend"] == "ssl_interface"
    assert hconv["frontend_conf"] == {"upstream": yaml.safe_load(upstream_conf.read_text())["wavlm"],
                                      "interface": "hconv", "interface_conf": {}}
    # 40 utterances // 16 = 2 sorted batches per epoch, 10 epochs: 20 steps, 10 % warm-up = 2
    assert hconv["scheduler_conf"] == {"warmup_steps_list": [0, 2, 20], "warmup_lr_list": [0.0, 0.002, 0.0]}
    assert "warmup_fraction" not in hconv
    assert hconv["train_data_path_and_name_and_type"][1] == [str(root / "data" / "train" / "text"), "text", "text"]
    assert hconv["token_type"] == "char" and hconv["best_model_criterion"][0] == ["valid", "wer_ctc", "min"]
    p = phn["if_hconv_phn"]
    assert p["token_type"] == "word" and p["token_list"] == str(lists["phn"])
    assert p["valid_data_path_and_name_and_type"][1] == [str(root / "data" / "dev" / "text.phn"), "text", "text"]
    assert p["best_model_criterion"] == [["valid", "loss", "min"]]
    assert char["if_weighted_sum_big_char"]["encoder_conf"]["hidden_size"] == 67
    assert char["if_weighted_sum_big_char"]["encoder_conf"]["num_layers"] == 2  # merged over the base
    fusion = char["if_wavlm+dhubert_hconv_char"]
    assert fusion["frontend"] == "delta_fusion" and fusion["frontend_conf"]["interface"] == "hconv"
    assert fusion["frontend_conf"]["reference"]["finetuned"] == str(root / "exp" / "ft_wavlm" / "valid.wer_ctc.best.pth")
    assert [d["upstream"] for d in fusion["frontend_conf"]["deltas"]] == ["hubert_local"]


def test_trainable_parameters_of_the_mini_systems(mini_setup):
    """Built by ESPnet from the rendered configs: the counts by hand, and the state dict
    (what interface_results counts) holds exactly the trainable parameters."""
    from espnet2.tasks.asr import ASRTask

    from espnet_delta.asr.register import register

    register()
    root, upstream_conf, lists, vocab = mini_setup
    for unit in ("char", "phn"):
        render(root, upstream_conf, lists[unit], unit)
        for name in EXPECTED_FRONTEND:
            config = root / "exp" / f"if_{name}_{unit}" / "train.yaml"
            args = ASRTask.get_parser().parse_args(["--config", str(config)])
            model = ASRTask.build_model(args)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            frontend = sum(p.numel() for p in model.frontend.parameters() if p.requires_grad)
            ctc = 64 * vocab[unit] + vocab[unit]  # Linear(64, V)
            assert frontend == EXPECTED_FRONTEND[name], (name, unit)
            assert trainable == EXPECTED_FRONTEND[name] + EXPECTED_DOWNSTREAM[name] + ctc, (name, unit)
            state = model.state_dict()
            fixed = sum(v.numel() for k, v in state.items() if k.rsplit(".", 1)[-1].startswith(FIXED_PREFIX))
            assert fixed == EXPECTED_FIXED.get(name, 0), (name, unit)
            assert sum(v.numel() for v in state.values()) == trainable + fixed, (name, unit)
            if unit == "char" and name in ("hconv", "weighted_sum", "pca"):  # pca: its fixed buffers not counted
                torch.save(state, config.parent / UNIT_CHECKPOINTS[unit])
                counted = interface_results.checkpoint_params(config.parent / UNIT_CHECKPOINTS[unit])
                assert counted == (EXPECTED_FRONTEND[name], trainable)
    # the ablation: weighted sum + BiLSTM(67) within 44 parameters of hconv + BiLSTM(64)
    assert interface_results.FIXED_PREFIX == FIXED_PREFIX
    assert (EXPECTED_FRONTEND["hconv"] + EXPECTED_DOWNSTREAM["hconv"]) - (
        EXPECTED_FRONTEND["weighted_sum_big"] + EXPECTED_DOWNSTREAM["weighted_sum_big"]) == 159_904 - 159_860


def test_bad_systems_are_named(mini_setup, tmp_path):
    root, upstream_conf, lists, _ = mini_setup
    cases = {
        "a: {interface: hconv, layers: [1]}": r"unknown keys \['layers'\]",
        "a: {interface_conf: {}}": "needs 'interface'",
        "a: {interface: mean}": r"interface='mean'; expected one of \[.*'pca', 'cls_pooling'\]",
        "a: {interface: hconv, upstream: bert}": "no upstream entry 'bert'",
        "a: {interface: hconv, fusion: concat}": r"sets \['fusion'\] without deltas",
        "a: {interface: hconv, deltas: [hubert]}": "needs the fine-tuned wavlm",
    }
    for text, message in cases.items():
        systems = write(tmp_path / "systems.yaml", text + "\n")
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            plan_interface(systems, RECIPE / "conf" / "interface.yaml", upstream_conf, root / "data", root / "shapes",
                           "char", lists["char"], tmp_path / "exp")


# ------------------------------------------------------------------ RESULTS.md section


def test_interface_results_table(tmp_path):
    from espnet_delta.scoring import normalize_phones, score

    write(tmp_path / "data" / "dev" / "text", "u1 THE SUN\n")
    write(tmp_path / "data" / "dev" / "text.phn", "u1 ð ə s ʌ n\n")
    for unit, state in (("char", {"frontend.interface.weights": torch.zeros(4), "ctc.ctc_lo.weight": torch.zeros(3, 5)}),
                        ("phn", {"frontend.interface.weights": torch.zeros(4), "ctc.ctc_lo.weight": torch.zeros(7, 5)})):
        job = tmp_path / "exp" / f"if_weighted_sum_{unit}"
        write(job / "config.yaml", yaml.safe_dump({"frontend": "ssl_interface", "frontend_conf": {"interface": "weighted_sum"},
                                                   "encoder": "rnn", "encoder_conf": {"num_layers": 2, "hidden_size": 64}}))
        torch.save(state, job / UNIT_CHECKPOINTS[unit])
        if unit == "char":  # WER 1/2 = 50 %; CER: T H E <space> S U N vs T H E <space> S O N: 1/7 = 14.3 %
            write(job / "decode" / "dev" / "text", "u1 THE SON\n")
            score(tmp_path / "data" / "dev" / "text", job / "decode" / "dev" / "text", job / "decode" / "dev" / "score_wer",
                  use_sctk=False)
        else:  # PER: one substitution in 5 phones = 20 %
            write(job / "decode" / "dev" / "text", "u1 ð ə s ɒ n\n")
            score(tmp_path / "data" / "dev" / "text.phn", job / "decode" / "dev" / "text", job / "decode" / "dev" / "score_per",
                  use_sctk=False, normalizer=normalize_phones)
    out = tmp_path / "if.md"
    interface_results.main(["--jobs", str(tmp_path / "exp" / "if_weighted_sum_char"), str(tmp_path / "exp" / "if_weighted_sum_phn"),
                            "--test_sets", "dev", "--out", str(out)])
    rows = [line for line in out.read_text().splitlines() if line.startswith("|weighted_sum|")]
    # frontend 4; char model 4 + 15 = 19, phone model 4 + 35 = 39; dev WER, CER, PER
    assert rows == ["|weighted_sum|ssl_interface|weighted_sum|rnn 2x64|4|19|39|50.0|14.3|20.0|"]
    with pytest.raises(ValueError, match="not a job dir if_<system>_<unit>"):
        interface_results.parse_job(Path("exp/ft_wavlm"))


def test_paper_scale_systems_render(tmp_path):
    """The MyST recipe's paper-scale systems: S3PRL hub names inline, hconv's parameter
    count matched by the enlarged BiLSTM of the ablation (numbers in the YAML's comments)."""
    myst = RECIPE.parents[1] / "myst" / "asr1" / "conf"
    for s in ("train", "dev"):
        write(tmp_path / "shapes" / s / "speech_shape", "u1 16000\n")
    for model in ("wavlm", "hubert"):
        write(tmp_path / "exp" / f"ft_{model}" / "valid.wer_ctc.best.pth", "")
    token_list = write(tmp_path / "tokens.txt", "<blank>\n<unk>\nA\n<sos/eos>\n")
    plan_interface(myst / "tuning" / "interface_systems_paper.yaml", myst / "tuning" / "interface_paper.yaml",
                   myst / "upstreams.yaml", tmp_path / "data", tmp_path / "shapes", "char", token_list, tmp_path / "exp")
    configs = {p.name: yaml.safe_load((p / "train.yaml").read_text()) for p in (tmp_path / "exp").glob("if_*")}
    # 6 upstreams x (weighted_sum, hconv, pca, cls_pooling, weighted_sum_big) + 1 fusion system
    assert len(configs) == 6 * 5 + 1
    hubs = {c["frontend_conf"]["upstream"]["upstream"] for c in configs.values() if c["frontend"] == "ssl_interface"}
    # the seed's five (HuBERT Base/Large, WavLM Base/Large, XLSR-53) and WavLM Base+
    assert hubs == {"hubert", "hubert_large_ll60k", "wavlm_base", "wavlm_base_plus", "wavlm_large", "xlsr_53"}
    for hub in ("hubert", "wavlm_base", "xlsr_53"):
        systems = {c["frontend_conf"]["interface"] for c in configs.values()
                   if c["frontend"] == "ssl_interface" and c["frontend_conf"]["upstream"]["upstream"] == hub}
        assert systems == {"weighted_sum", "hconv", "pca", "cls_pooling"}, hub
    assert configs["if_xlsr53_weighted_sum_big_char"]["encoder_conf"]["hidden_size"] == 1113
    assert configs["if_wavlm_base_weighted_sum_big_char"]["encoder_conf"]["hidden_size"] == 1083
    assert configs["if_wavlm_large_weighted_sum_big_char"]["encoder_conf"]["hidden_size"] == 1113
    assert configs["if_wavlm+dhubert_hconv_char"]["frontend_conf"]["reference"]["upstream"] == "wavlm_large"

    def lstm(inp, hidden):
        return 4 * hidden * inp + 4 * hidden * hidden + 8 * hidden

    def downstream(inp, hidden):  # 2-layer BiLSTM without projection + Linear(2 hidden, 1024)
        return 2 * lstm(inp, hidden) + 2 * lstm(2 * hidden, hidden) + 2 * hidden * 1024 + 1024

    # Base: hconv 768*768*5 + 768 + 768*384*5 + 384; Large: 1024*1024*5 + 1024 + 1024*341*5 + 341 (output 1023)
    base_hconv, large_hconv = 768 * 768 * 5 + 768 + 768 * 384 * 5 + 384, 1024 * 1024 * 5 + 1024 + 1024 * 341 * 5 + 341
    assert (base_hconv, large_hconv) == (4_424_832, 6_990_165)
    assert base_hconv + downstream(768, 1024) == 46_401_664 and 13 + downstream(768, 1083) == 46_440_077
    assert large_hconv + downstream(1023, 1024) == 51_055_957 and 25 + downstream(1024, 1113) == 51_074_393
    from espnet_delta.ssl.interfaces import build_interface

    assert sum(p.numel() for p in build_interface("hconv", 13, 768).parameters()) == base_hconv
    assert sum(p.numel() for p in build_interface("hconv", 25, 1024).parameters()) == large_hconv
    # cls_pooling: 3 D^2 + 3 D (the YAML's comment); pca: nothing trainable
    assert sum(p.numel() for p in build_interface("cls_pooling", 13, 768).parameters()) == 1_771_776 == 3 * 768**2 + 3 * 768
    assert sum(p.numel() for p in build_interface("cls_pooling", 25, 1024).parameters()) == 3_148_800
    assert not list(build_interface("pca", 13, 768).parameters())
