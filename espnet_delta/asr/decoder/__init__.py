"""ESPnet decoders of the plugin, one module per registry key (`decoder: <key>`)."""
