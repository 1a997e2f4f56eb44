"""rerank-bridge: a transparent proxy that reranks OpenSearch/Elasticsearch searches with a cross-encoder."""

__version__ = "0.1.0"
