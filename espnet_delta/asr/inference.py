"""Python-side inference: ESPnet's Speech2Text with the plugin registered first."""

from espnet_delta.asr.register import register

register()

from espnet2.bin.asr_inference import Speech2Text as _EspnetSpeech2Text  # noqa: E402


class Speech2Text(_EspnetSpeech2Text):
    """``espnet2.bin.asr_inference.Speech2Text`` that also loads delta-fusion models.

    >>> s2t = Speech2Text(asr_train_config="exp/fusion/config.yaml",
    ...                   asr_model_file="exp/fusion/valid.wer_ctc.best.pth", ctc_weight=1.0)
    >>> text, tokens, token_ids, hyp = s2t(waveform)[0]
    """
