"""Audio for the builders: reading PCM wav files and turning them into fixed-size log spectrograms
(numpy only: no audio library is needed to prepare a dataset).

The spectrogram of AV-MNIST-style audio is `(frames, bins)` = 112 × 112: the recording is
centred in a fixed window of `duration` seconds (cropped or zero-padded at both ends), split into
`frames` Hann-windowed frames of `2 · (bins − 1)` samples at an even hop, and each frame's power
spectrum |FFT|² (its `bins` non-negative frequencies) is taken as log(power + 1e-10).
"""
import wave
from typing import Tuple

import numpy as np

_SAMPLE_TYPES = {1: np.uint8, 2: np.int16, 4: np.int32}


def read_wav(path: str) -> Tuple[np.ndarray, int]:
  """`(samples float32 in [−1, 1], sample rate)` of an uncompressed PCM wav file (8, 16 or 32
  bit; several channels are averaged)."""
  with wave.open(path, "rb") as file:
    width, channels, rate = file.getsampwidth(), file.getnchannels(), file.getframerate()
    raw = file.readframes(file.getnframes())
  if width not in _SAMPLE_TYPES:
    raise ValueError(f"{path}: {8 * width}-bit samples; only 8, 16 and 32-bit PCM wav is read")
  samples = np.frombuffer(raw, _SAMPLE_TYPES[width]).astype(np.float32)
  if width == 1:   # 8-bit wav is unsigned
    samples = samples - 128.0
  samples /= float(2 ** (8 * width - 1))
  return samples.reshape(-1, channels).mean(axis=1), rate


def write_wav(path: str, samples: np.ndarray, rate: int) -> None:
  """Writes float samples in [−1, 1] as a mono 16-bit PCM wav (for tests and fake datasets)."""
  pcm = np.clip(np.round(np.asarray(samples) * 32767), -32768, 32767).astype("<i2")
  with wave.open(path, "wb") as file:
    file.setnchannels(1)
    file.setsampwidth(2)
    file.setframerate(rate)
    file.writeframes(pcm.tobytes())


def fit_to_window(samples: np.ndarray, length: int) -> np.ndarray:
  """`samples` centred in `length` samples: cropped, or zero-padded at both ends."""
  if len(samples) >= length:
    start = (len(samples) - length) // 2
    return samples[start:start + length]
  before = (length - len(samples)) // 2
  return np.pad(samples, (before, length - len(samples) - before))


def log_spectrogram(samples: np.ndarray, rate: int, frames: int = 112, bins: int = 112,
                    duration: float = 1.0) -> np.ndarray:
  """`(frames, bins)` float32 log power spectrogram of `duration` seconds of audio (see the
  module docstring)."""
  window = 2 * (bins - 1)
  signal = fit_to_window(np.asarray(samples, np.float32), int(round(duration * rate)))
  if len(signal) < window:
    raise ValueError(f"a {duration} s window at {rate} Hz holds {len(signal)} samples, fewer "
                     f"than one {window}-sample frame; lengthen the duration")
  hop = (len(signal) - window) / max(frames - 1, 1)
  starts = np.round(np.arange(frames) * hop).astype(int)
  framed = signal[starts[:, None] + np.arange(window)] * np.hanning(window).astype(np.float32)
  power = np.abs(np.fft.rfft(framed, axis=1)) ** 2
  return np.log(power + 1e-10).astype(np.float32)


def mix_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
  """`samples` plus white Gaussian noise at a signal-to-noise ratio of `snr_db` decibels (the
  signal's power over the noise's)."""
  power = float(np.mean(np.square(samples))) or 1e-12
  noise = rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), size=samples.shape)
  return (samples + noise).astype(np.float32)
