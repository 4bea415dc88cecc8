"""Whisper in espnet_delta: tiny local checkpoints, screening transcription, ESPnet integration."""
