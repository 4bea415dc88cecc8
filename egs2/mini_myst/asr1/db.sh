# Corpus locations (as in ESPnet recipes); run.sh and local/data.sh read them. The mini corpus is synthetic:
# local/data.sh (stage 1) generates it here (espeak-ng, deterministic, about a minute), a MyST-like part
# in ${MINI_MYST}/myst and a LibriSpeech-like adult part in ${MINI_MYST}/librispeech.
MINI_MYST=downloads/mini_myst
