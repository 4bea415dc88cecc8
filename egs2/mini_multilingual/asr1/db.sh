# Corpus locations (as in ESPnet recipes); run.sh and local/data.sh read them. The corpus is synthetic:
# local/data.sh (stage 1) generates it here (espeak-ng, six languages, deterministic, ~15 s on two
# cores) and prepares data/{train,dev,test} (text: graphemes, text.phn: phonemes, utt2lang).
MINI_MULTILINGUAL=downloads/mini_multilingual
