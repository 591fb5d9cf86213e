"""AudioChatLlama: an audio encoder → frame stacking → projector → a frozen chat LLM, trained by
modal invariance (the LLM's own answers to transcripts are the only supervision)."""
