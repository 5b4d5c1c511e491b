"""Speech activity of a crop from frame energies: cheap enough for online mixing.

A frame counts as active when its RMS level is within ``range_db`` of the
crop's loudest frame and above ``floor_dbfs``. This finds crops that are mostly
silence or a pause (a real risk with Common Voice clips, which often start and
end with a second of room tone): loudness normalisation would otherwise
raise them to -20 LUFS and the model would be trained to "extract" them.
Stationary noise with no speech at all is not detected this way; a VAD over
whole files at corpus-scan time is the place for that.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> speech = rng.standard_normal(16000) * 0.1
>>> round(active_fraction(speech), 2)
1.0
>>> mostly_silent = np.concatenate([speech[:4800], np.zeros(11200)])
>>> round(active_fraction(mostly_silent), 2)
0.3
"""

from __future__ import annotations

import numpy as np

from modules.audio import SAMPLE_RATE


def active_fraction(
    wav,
    sample_rate: int = SAMPLE_RATE,
    frame_seconds: float = 0.02,
    range_db: float = 35.0,
    floor_dbfs: float = -70.0,
) -> float:
    """Fraction of ``frame_seconds`` frames of ``wav`` that hold signal.

    Arguments
    ---------
    wav : array-like
        ``[T]`` signal (numpy array or tensor).
    sample_rate : int
    frame_seconds : float
        Frame length (non-overlapping frames; a partial last frame is dropped,
        unless it is the only one).
    range_db : float
        Frames more than this far below the loudest frame are inactive.
    floor_dbfs : float
        Frames below this RMS level are inactive whatever the range.

    Returns
    -------
    float
        In ``[0, 1]``; 0 for an empty or all-zero signal.
    """
    wav = np.asarray(wav, dtype=np.float64).reshape(-1)
    frame = max(1, int(round(frame_seconds * sample_rate)))
    count = max(1, len(wav) // frame)
    if len(wav) == 0:
        return 0.0
    frames = wav[: count * frame].reshape(count, -1) if len(wav) >= frame else wav[None]
    level_db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-20)
    threshold = max(float(level_db.max()) - range_db, floor_dbfs)
    return float(np.mean(level_db > threshold))
