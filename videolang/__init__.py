"""videolang: video-language pretraining on hierarchical, noisy video corpora."""

__version__ = "0.1.0"
