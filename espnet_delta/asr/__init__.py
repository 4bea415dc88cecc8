"""ESPnet integration: frontends, the identity encoder, the CTC-WER model, registration,
Speech2Text and greedy CTC decoding."""
