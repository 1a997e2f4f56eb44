"""Relevance evaluation: BM25 straight from the engine against the same queries reranked through the bridge."""
