"""espnet_delta: an ESPnet plugin for delta SSL embedding fusion and related child-ASR methods."""

__version__ = "0.1.0"
