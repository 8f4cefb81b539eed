"""The model: media → tokens → positions → the thinker's language model → text.

`media` preprocesses frames and PCM, `backend` (`OmniBackend`) loads a Qwen2.5-Omni thinker
checkpoint (`checkpoint`) and encodes media into timestamped tokens (`tokens`), `positions`
and `rope` place them (Sync-RoPE, with `aliasing` as its diagnostic), `lm` and `attention`
run the decoder layers, `question` builds the user turn and `generate` decodes the answer.
"""
