"""Speech synthesis with espeak-ng, through its command line (Debian package `espeak-ng`).

Used for two things: rendering the world's question texts as spoken questions (training and
benchmarks, several voices) and speaking answers back to a session. espeak-ng writes a mono
16-bit WAV at 22,050 Hz to stdout; `synthesize` returns float32 samples in [-1, 1] at the
rate asked for (scipy's polyphase resampler).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from math import gcd

import numpy as np
from scipy.signal import resample_poly

from .errors import SpeechSynthesisError

ESPEAK = "espeak-ng"
ESPEAK_RATE = 22050
_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice: `name` is a voice, optionally with a variant (`en-gb+f3`); rate in
    words per minute (80–450); pitch 0–99 (50 is the voice's own)."""

    name: str = "en-us"
    rate_wpm: int = 175
    pitch: int = 50

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name) or self.name.startswith("-"):
            raise ValueError(f"bad espeak-ng voice name {self.name!r}")
        if not 80 <= self.rate_wpm <= 450:
            raise ValueError(f"rate_wpm must be in [80, 450], got {self.rate_wpm}")
        if not 0 <= self.pitch <= 99:
            raise ValueError(f"pitch must be in [0, 99], got {self.pitch}")


def espeak_available() -> bool:
    """Whether the espeak-ng binary is on PATH."""
    return shutil.which(ESPEAK) is not None


def _wav_samples(data: bytes) -> np.ndarray:
    """int16 mono samples of espeak-ng's WAV (its streamed header's sizes are not to be trusted:
    the data chunk runs to the end of the output)."""
    at = data.find(b"data", 12)
    if data[:4] != b"RIFF" or at < 0:
        raise SpeechSynthesisError("espeak-ng wrote no WAV data")
    body = data[at + 8 :]
    return np.frombuffer(body[: len(body) // 2 * 2], dtype="<i2")


@lru_cache(maxsize=256)
def _render(text: str, voice: Voice) -> bytes:
    if not espeak_available():
        raise SpeechSynthesisError(f"{ESPEAK} is not installed (Debian/Ubuntu: apt-get install espeak-ng)")
    cmd = [ESPEAK, "--stdout", "-v", voice.name, "-s", str(voice.rate_wpm), "-p", str(voice.pitch)]
    cmd += ["--", text]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SpeechSynthesisError(f"{ESPEAK} took over {_TIMEOUT_S:g} s") from exc
    if done.returncode != 0:
        raise SpeechSynthesisError(f"{ESPEAK} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def synthesize(text: str, voice: Voice = Voice(), sample_rate: int = 16000) -> np.ndarray:
    """`text` spoken by `voice`: float32 mono samples at `sample_rate`, leading and trailing
    silence trimmed. Empty text gives no samples. Renders are cached per (text, voice)."""
    text = " ".join(text.split())
    if not text:
        return np.zeros(0, dtype=np.float32)
    wave = _wav_samples(_render(text, voice)).astype(np.float32) / 32768.0
    loud = np.nonzero(np.abs(wave) > 1e-3)[0]
    wave = wave[loud[0] : loud[-1] + 1] if len(loud) else wave[:0]
    if sample_rate != ESPEAK_RATE and len(wave):
        g = gcd(sample_rate, ESPEAK_RATE)
        wave = resample_poly(wave, sample_rate // g, ESPEAK_RATE // g)
    return np.clip(wave, -1.0, 1.0).astype(np.float32, copy=False)


@dataclass(frozen=True)
class VoiceCatalog:
    """The voices this espeak-ng offers: languages (`en-us`) and variants (`f3`), lower case."""

    languages: frozenset[str] = frozenset()
    variants: frozenset[str] = frozenset()

    def knows(self, name: str) -> bool:
        """Whether `name` (`language` or `language+variant`, any case) is one of these voices."""
        language, _, variant = name.lower().partition("+")
        return language in self.languages and (not variant or variant in self.variants)


def voice_catalog() -> VoiceCatalog:
    """What `espeak-ng --voices` lists (an empty catalog without espeak-ng); runs two subprocesses."""
    if not espeak_available():
        return VoiceCatalog()

    def column(option: str, index: int) -> frozenset[str]:
        done = subprocess.run(
            [ESPEAK, option], capture_output=True, timeout=_TIMEOUT_S, check=False, text=True
        )
        rows = [line.split() for line in done.stdout.splitlines()[1:]]
        return frozenset(row[index].lower() for row in rows if len(row) > index)

    variants = {v.removeprefix("!v/") for v in column("--voices=variant", 4)}
    return VoiceCatalog(column("--voices", 1), frozenset(variants))
