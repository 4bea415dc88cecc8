# Corpus locations on this machine (as in ESPnet recipes); run.sh and local/data.sh read them.
# MYST: root of the MyST children's speech corpus (LDC2021S05), the folder holding
#   data/{train,development,test}/<student>/<session>/*.flac with a .trn beside each; stage 1.
MYST=
# LIBRISPEECH: LibriSpeech root holding train-clean-100/, dev-clean/, test-clean/ (adult
#   speech: splits libri_train, libri_dev, libri_test); optional, needed for merging
#   (./run.sh --adult_train_set libri_train).
LIBRISPEECH=
