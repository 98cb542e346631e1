"""Compressors, one module each; every module here is imported by ``registry.load_parts`` and
registers its class with ``@register``. The contract is in :mod:`.base`."""

from .base import Compressor, MessageCompressor, MultiPhase, Sparsifier, tensor_k

__all__ = ["Compressor", "MessageCompressor", "MultiPhase", "Sparsifier", "tensor_k"]
