"""Put the plugin's classes into ESPnet's class choices.

ESPnet has no plugin hook; its ASR task keeps module-level ``ClassChoices`` whose
``.classes`` dicts are read when the argument parser is built and when a saved
config is turned back into a model. Calling :func:`register` before either makes
``frontend: delta_fusion`` (or ``cached_fusion``, ``ssl_interface``, ``sshr``), ``encoder: identity``
(or ``sshr``, ``whisper_file``), ``decoder: whisper_file`` and
``model: espnet_ctc_wer`` valid in any ESPnet ASR config.

The Whisper classes get names of their own rather than replacing ESPnet's ``whisper``:
:func:`register` never overrides an ESPnet class (a stock ``encoder: whisper`` config keeps
ESPnet's exact behaviour), and a saved config that needs the plugin says so by its name.
"""

from espnet_delta.asr.decoder.whisper_file import WhisperFileDecoder
from espnet_delta.asr.encoder.identity import IdentityEncoder
from espnet_delta.asr.encoder.sshr import SSHREncoder
from espnet_delta.asr.encoder.whisper_file import WhisperFileEncoder
from espnet_delta.asr.frontend.cached_fusion import CachedFusionFrontend
from espnet_delta.asr.frontend.delta_fusion import DeltaFusionFrontend
from espnet_delta.asr.frontend.s3prl_exact import ExactS3prlFrontend
from espnet_delta.asr.frontend.ssl_interface import SSLInterfaceFrontend
from espnet_delta.asr.frontend.sshr import SSHRFrontend

FRONTENDS = {
    "delta_fusion": DeltaFusionFrontend,
    "cached_fusion": CachedFusionFrontend,
    "ssl_interface": SSLInterfaceFrontend,
    "s3prl_exact": ExactS3prlFrontend,
    "sshr": SSHRFrontend,
}
ENCODERS = {"identity": IdentityEncoder, "sshr": SSHREncoder, "whisper_file": WhisperFileEncoder}
DECODERS = {"whisper_file": WhisperFileDecoder}  # hub name or local checkpoint (espnet_delta/whisper/load.py)


def register() -> None:
    """Idempotently add the plugin's frontends, encoders, decoder and model to ESPnet's ASR task."""
    from espnet2.tasks.asr import decoder_choices, encoder_choices, frontend_choices, model_choices

    from espnet_delta.asr.ctc_wer_model import CTCWERModel

    models = {"espnet_ctc_wer": CTCWERModel}
    for choices, classes in (
        (frontend_choices, FRONTENDS), (encoder_choices, ENCODERS), (decoder_choices, DECODERS), (model_choices, models)
    ):
        for name, cls in classes.items():
            existing = choices.classes.get(name)
            if existing is not None and existing is not cls:
                raise RuntimeError(f"ESPnet already has a {choices.name} named {name!r}: {existing}")
            choices.classes[name] = cls
