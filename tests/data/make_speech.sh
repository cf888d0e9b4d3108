#!/usr/bin/env bash
# Regenerates the project's own speech clips (espeak-ng + sox), 16 kHz mono PCM16 WAV.
set -euo pipefail
cd "$(dirname "$0")"
say() { espeak-ng -v en-us -s 150 -w "/tmp/$1.raw.wav" "$2" && sox "/tmp/$1.raw.wav" -r 16000 -c 1 -b 16 "$1.wav" && rm "/tmp/$1.raw.wav"; }
say weather "The weather today is sunny with a light breeze from the west."
say library "Please return the library books before Friday afternoon."
say garden "My grandmother planted tomatoes and roses in her garden."
sayin() { espeak-ng -v "$1" -s 140 -w "/tmp/$2.raw.wav" "$3" && sox "/tmp/$2.raw.wav" -r 16000 -c 1 -b 16 "$2.wav" && rm "/tmp/$2.raw.wav"; }
sayin es spanish "Buenos días. Me gusta mucho la playa y el mar."
sayin de german "Guten Morgen. Das Wetter ist heute sehr schön."
