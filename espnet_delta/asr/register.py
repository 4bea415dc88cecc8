"""Put the plugin's classes into ESPnet's class choices.

ESPnet has no plugin hook; its ASR task keeps module-level ``ClassChoices`` whose
``.classes`` dicts are read when the argument parser is built and when a saved
config is turned back into a model. Calling :func:`register` before either makes
``frontend: delta_fusion`` (or ``cached_fusion``, ``ssl_interface``, ``sshr``), ``encoder: identity``
(or ``sshr``) and
``model: espnet_ctc_wer`` valid in any ESPnet ASR config.
"""

from espnet_delta.asr.cached_frontend import CachedFusionFrontend
from espnet_delta.asr.frontend import DeltaFusionFrontend
from espnet_delta.asr.identity_encoder import IdentityEncoder
from espnet_delta.asr.interface_frontend import SSLInterfaceFrontend
from espnet_delta.asr.s3prl_exact_frontend import ExactS3prlFrontend
from espnet_delta.asr.sshr import SSHREncoder
from espnet_delta.asr.sshr_frontend import SSHRFrontend

FRONTENDS = {
    "delta_fusion": DeltaFusionFrontend,
    "cached_fusion": CachedFusionFrontend,
    "ssl_interface": SSLInterfaceFrontend,
    "s3prl_exact": ExactS3prlFrontend,
    "sshr": SSHRFrontend,
}
ENCODERS = {"identity": IdentityEncoder, "sshr": SSHREncoder}


def register() -> None:
    """Idempotently add the plugin's frontends, encoder and model to ESPnet's ASR task."""
    from espnet2.tasks.asr import encoder_choices, frontend_choices, model_choices

    from espnet_delta.asr.ctc_wer_model import CTCWERModel

    models = {"espnet_ctc_wer": CTCWERModel}
    for choices, classes in ((frontend_choices, FRONTENDS), (encoder_choices, ENCODERS), (model_choices, models)):
        for name, cls in classes.items():
            existing = choices.classes.get(name)
            if existing is not None and existing is not cls:
                raise RuntimeError(f"ESPnet already has a {choices.name} named {name!r}: {existing}")
            choices.classes[name] = cls
