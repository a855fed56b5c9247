"""Versioned experiment package: data sharding, training, evaluation and provenance for an AI weather model."""

__version__ = "0.1.0"
