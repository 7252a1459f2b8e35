#!/usr/bin/env python3
"""Writes the demo page's audio file: a WAV (16-bit PCM, mono, 22,050 Hz) of a slow arpeggio,
SECONDS long (default 90: about 3.8 MiB), large enough that the browser fetches it with Range
requests and has to buffer before it can play. Generated rather than committed: `make run`
writes www/dynamic/demo.wav (git-ignored) and the browser test writes its own copy.

    python3 contrib/demo_audio.py www/dynamic/demo.wav [SECONDS]
"""

import array
import math
import os
import struct
import sys

RATE = 22050
NOTE_SECONDS = 0.5
# A minor seventh arpeggio, up and down (Hz).
NOTES = [220.00, 261.63, 329.63, 392.00, 440.00, 392.00, 329.63, 261.63]


def note_samples(freq: float) -> array.array:
    n = int(RATE * NOTE_SECONDS)
    fade = int(RATE * 0.02)  # short fades in and out: no clicks between notes
    out = array.array("h", bytes(2 * n))
    for i in range(n):
        envelope = min(1.0, i / fade, (n - 1 - i) / fade)
        tone = math.sin(2 * math.pi * freq * i / RATE) + 0.3 * math.sin(4 * math.pi * freq * i / RATE)
        out[i] = int(9000 * envelope * tone)
    return out


def wav_bytes(seconds: float) -> bytes:
    notes = [note_samples(f).tobytes() for f in NOTES]
    count = max(1, int(seconds / NOTE_SECONDS))
    pcm = b"".join(notes[i % len(notes)] for i in range(count))
    if sys.byteorder != "little":
        swapped = array.array("h", pcm)
        swapped.byteswap()
        pcm = swapped.tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE * 2, 2, 16)
    header += b"data" + struct.pack("<I", len(pcm))
    return header + pcm


def write(path: str, seconds: float = 90.0) -> None:
    """Writes the file under a temporary name, then renames it: a server never sees half of it."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(wav_bytes(seconds))
    os.replace(tmp, path)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    write(sys.argv[1], float(sys.argv[2]) if len(sys.argv) == 3 else 90.0)
