"""Which models each stage needs (espnet_delta.recipe.models): the list stage 0 fetches and the checks use."""

from __future__ import annotations

import argparse

from espnet_delta.recipe.models import needed_models, stage_models


def settings(tmp_path, **kw):
    (tmp_path / "up.yaml").write_text("wavlm: {upstream: wavlm_large}\nhubert: {upstream: hubert_large_ll60k}\n"
                                      "w2v: {upstream: wav2vec2_local, path_or_url: /m/w2v.pt}\n")
    base = dict(upstreams=["wavlm", "hubert"], adult_upstreams=[], adult_train_set="", upstream_conf=str(tmp_path / "up.yaml"),
                finetune_config="ft.yaml", probe_config="", interface_systems="", sshr_systems="", whisper_config="",
                whisper_asr_model="", screen_model="", screen_hyp="", screen_opts="")
    base.update(kw)
    return argparse.Namespace(**base)


def names(models):
    return [(m.kind, m.name, m.stages) for m in models]


def test_every_stage_and_its_models(tmp_path):
    (tmp_path / "if.yaml").write_text("a: {interface: hconv, upstream: {upstream: xls_r_300m}}\n"
                                      "b: {interface: hconv, upstream: w2v}\nc: {interface: hconv, deltas: [hubert]}\n")
    (tmp_path / "wh.yaml").write_text("encoder_conf: {whisper_model: small, download_dir: dl/whisper}\n")
    s = settings(tmp_path, adult_train_set="libri", interface_systems=str(tmp_path / "if.yaml"),
                 whisper_config=str(tmp_path / "wh.yaml"), screen_model="large-v2", screen_hyp=str(tmp_path / "no.tsv"))
    assert names(stage_models(s, 1)) == [("whisper", "large-v2", ())]
    assert names(needed_models(s, (1, 4, 5, 6, 8, 10))) == [
        ("whisper", "large-v2", (1,)),
        ("s3prl", "wavlm_large", (4, 5, 6, 8, 10)),
        ("s3prl", "hubert_large_ll60k", (4, 5, 6, 10)),
        ("s3prl", "xls_r_300m", (4, 5)),
        ("file", "/m/w2v.pt", (4, 5)),
        ("whisper", "small", (4, 5, 8)),
    ]
    assert stage_models(s, 4)[-1].download_dir == "dl/whisper"  # the config's Whisper cache
    # --whisper_asr_model wins over the config's; nothing needed by stages 2, 3, 7, 9
    assert stage_models(settings(tmp_path, whisper_config=str(tmp_path / "wh.yaml"), whisper_asr_model="medium"), 4)[-1].name == "medium"
    assert all(stage_models(s, n) == [] for n in (2, 3, 7, 9))


def test_no_screening_once_the_hypotheses_exist_and_no_merge_models_without_adult_data(tmp_path):
    (tmp_path / "hyp.tsv").write_text("u\thi\n")
    s = settings(tmp_path, screen_model="large-v2", screen_hyp=str(tmp_path / "hyp.tsv"))
    assert stage_models(s, 1) == [] and stage_models(s, 8) == []
