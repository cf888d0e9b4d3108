"""The shared transcriber: one actor per loaded model, a pool of workers batching the speech of
every session and upload onto it (`actor`), and long files cut at pauses on top of it
(`files`)."""
