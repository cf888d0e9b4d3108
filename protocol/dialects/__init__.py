"""Compatible dialects: sans-IO codecs between other APIs' wire shapes and the native frames.

`deepgram` (Deepgram live streaming, `WS /v1/listen`), `seed_stt` (`WS /ws/v1/speech-to-text`),
`seed_call` (`WS /ws/{client_id}`), `seed_ws` (`WS /ws`); `languages` maps Whisper's language
names and codes. Routes live in `service/routes/dialects.py`.
"""
