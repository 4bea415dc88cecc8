"""Analysis of the trained models: layer-wise CCA/PWCCA, MoE gate statistics, figures.

Modules: :mod:`.similarity` (mean CCA, PWCCA), :mod:`.layerwise` (pre-trained vs
fine-tuned vs delta per hidden state), :mod:`.gates` (per-utterance MoE gate
weights), :mod:`.wer_chart` (WER with paired-bootstrap intervals), :mod:`.plots`
(matplotlib figures, Agg), :mod:`.outputs` (caches and write-if-changed).
CLI: ``python -m espnet_delta.bin.analyze`` (the recipe's analysis stage).
"""
