"""SSL upstreams: building and loading S3PRL models (hub name, local checkpoint, fine-tuned
ESPnet weights), freezing them, the embedding streams (E_ft, E_pt, delta) and tiny checkpoints."""
