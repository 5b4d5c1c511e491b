"""Target speaker extraction mixtures: corpora, references, mixers, static and online mixing.

Modules
-------
corpus
    Find speakers and utterances (generic and LibriSpeech layouts, namespaced ids).
references
    :class:`~mixing.references.Segment` and the target/reference choice
    (different utterance, or the split-utterance protocol).
mixers
    :class:`~mixing.mixers.Mixer`: loudness, target-to-interferer ratio, noise,
    lengths, peak protection.
online
    :class:`~mixing.online.OnlineMixer` for fresh training mixtures every epoch.
make_mixtures
    The command line tool writing train/valid/test folders and manifests.
"""
