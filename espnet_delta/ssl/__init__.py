"""SSL upstreams: building and loading S3PRL models (hub name, local checkpoint, fine-tuned
ESPnet weights), freezing them, the embedding streams (E_ft, E_pt, delta) and their names,
running layers i..j ourselves, tiny checkpoints and pre-training.

This room sits at the bottom with data/: it imports nothing of the package but fileio."""
