"""ASR systems: a CTC Conformer trained here (transformers' ParakeetForCTC) and Whisper."""
