"""What a play plays: DTMF tones, text to speech or an audio file, and how long each lasts.

The dataclasses validate themselves, so an invalid `Media` cannot exist; `dtmf`, `tts` and `audio`
take the API's raw strings, accept their case-insensitive spellings and return canonical values.
Every check raises ValueError with a message meant for the API client.

Durations (seconds), which the sandbox carrier plays for and a real carrier can report:
- DTMF: 100 ms of tone plus 50 ms of gap per digit; each `w` is a 500 ms pause.
- TTS: an estimate from the word count at 150 words per minute (0.4 s a word), at least 500 ms.
- AUDIO: a WAV file's real length, frames / frame rate (`wav_duration`). Fetching a URL or an
  attachment is the engine's business: it hands the carrier a resolver (see sandbox.py); audio
  that cannot be resolved or decoded counts as AUDIO_FALLBACK_SECONDS.
"""

from __future__ import annotations

import io
import re
import wave
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

DTMF_MAX_DIGITS = 64
TTS_MAX_CHARS = 4000
VOICE_MAX_CHARS = 64
DEFAULT_LANGUAGE = "en-US"

DTMF_TONE_SECONDS = 0.100
DTMF_GAP_SECONDS = 0.050
DTMF_PAUSE_SECONDS = 0.500  # one `w`
TTS_WORDS_PER_MINUTE = 150
TTS_MIN_SECONDS = 0.500
AUDIO_FALLBACK_SECONDS = 3.0

_DTMF = re.compile(r"^[0-9*#A-Dw]+$")
# BCP-47-ish: language (2-3 letters), optional script (4 letters), optional region (2 letters or
# 3 digits), e.g. es, en-US, zh-Hans-CN, es-419.
_LANGUAGE = re.compile(r"^([A-Za-z]{2,3})(?:-([A-Za-z]{4}))?(?:-([A-Za-z]{2}|[0-9]{3}))?$")


class MediaKind(StrEnum):
    DTMF = "DTMF"
    TTS = "TTS"
    AUDIO = "AUDIO"


class Gender(StrEnum):
    MALE = "male"
    FEMALE = "female"
    NEUTRAL = "neutral"


class AudioSource(StrEnum):
    URL = "URL"
    ATTACHMENT = "ATTACHMENT"  # `source` is an attachment id


@dataclass(frozen=True)
class Dtmf:
    digits: str

    kind = MediaKind.DTMF

    def __post_init__(self) -> None:
        if not self.digits:
            raise ValueError("dtmf_digits must not be empty")
        if len(self.digits) > DTMF_MAX_DIGITS:
            raise ValueError(
                f"dtmf_digits has {len(self.digits)} characters; at most {DTMF_MAX_DIGITS}"
            )
        if not _DTMF.match(self.digits):
            bad = sorted({c for c in self.digits if not _DTMF.match(c)})
            raise ValueError(
                f"dtmf_digits may contain only 0-9 * # A-D and w (a 500 ms pause), not {bad}"
            )


@dataclass(frozen=True)
class Tts:
    text: str
    language: str = DEFAULT_LANGUAGE
    gender: Gender | None = None
    voice: str = ""

    kind = MediaKind.TTS

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise ValueError("text must not be empty")
        if len(self.text) > TTS_MAX_CHARS:
            raise ValueError(f"text has {len(self.text)} characters; at most {TTS_MAX_CHARS}")
        if _canonical_language(self.language) != self.language:
            raise ValueError(
                f"language {self.language!r} is not a language tag such as en-US or es"
            )
        if len(self.voice) > VOICE_MAX_CHARS:
            raise ValueError(f"voice has {len(self.voice)} characters; at most {VOICE_MAX_CHARS}")


@dataclass(frozen=True)
class Audio:
    source_type: AudioSource
    source: str

    kind = MediaKind.AUDIO

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ValueError("source must not be empty")
        if self.source_type is AudioSource.URL:
            parts = urlsplit(self.source)
            if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
                raise ValueError(f"source {self.source!r} is not an http(s) URL")


Media = Dtmf | Tts | Audio


def _canonical_language(raw: str) -> str | None:
    match = _LANGUAGE.match(raw)
    if match is None:
        return None
    language, script, region = match.groups()
    parts = [language.lower()]
    if script:
        parts.append(script.title())
    if region:
        parts.append(region.upper())
    return "-".join(parts)


def dtmf(digits: str) -> Dtmf:
    """From the API's `dtmf_digits`: letters A-D and the pause `w` in either case."""
    canonical = "".join("w" if c in "wW" else c.upper() for c in digits.strip())
    return Dtmf(canonical)


def tts(text: str, language: str = "", gender: str = "", voice: str = "") -> Tts:
    """From the API's strings: empty language means en-US, empty gender means the voice's own."""
    tag = language.strip() or DEFAULT_LANGUAGE
    canonical = _canonical_language(tag)
    if canonical is None:
        raise ValueError(f"language {language!r} is not a language tag such as en-US or es")
    chosen: Gender | None = None
    if gender.strip():
        try:
            chosen = Gender(gender.strip().lower())
        except ValueError:
            raise ValueError(f"gender {gender!r} is not one of male, female, neutral") from None
    return Tts(text, canonical, chosen, voice.strip())


def audio(source_type: str, source: str) -> Audio:
    """From the API's `source_type` (URL or ATTACHMENT, any case) and `source`."""
    try:
        kind = AudioSource(source_type.strip().upper())
    except ValueError:
        raise ValueError(f"source_type {source_type!r} is not one of URL, ATTACHMENT") from None
    return Audio(kind, source.strip())


def dtmf_duration(media: Dtmf) -> float:
    pauses = media.digits.count("w")
    tones = len(media.digits) - pauses
    return tones * (DTMF_TONE_SECONDS + DTMF_GAP_SECONDS) + pauses * DTMF_PAUSE_SECONDS


def tts_duration(media: Tts) -> float:
    """An estimate: real engines vary with voice and punctuation, but the order is right."""
    words = len(media.text.split())
    return max(TTS_MIN_SECONDS, words * 60.0 / TTS_WORDS_PER_MINUTE)


def wav_duration(data: bytes) -> float:
    """The length of a WAV file in seconds; ValueError if `data` is not a readable WAV."""
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            frames = reader.getnframes()
            rate = reader.getframerate()
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a WAV file: {exc}") from exc
    if rate <= 0:
        raise ValueError("not a WAV file: frame rate is 0")
    return frames / rate


def media_duration(media: Media, audio_data: bytes | None = None) -> float:
    """How long `media` plays. For AUDIO, `audio_data` is the resolved file; None, or data that is
    not a WAV, gives AUDIO_FALLBACK_SECONDS."""
    if isinstance(media, Dtmf):
        return dtmf_duration(media)
    if isinstance(media, Tts):
        return tts_duration(media)
    if audio_data is None:
        return AUDIO_FALLBACK_SECONDS
    try:
        return wav_duration(audio_data)
    except ValueError:
        return AUDIO_FALLBACK_SECONDS
