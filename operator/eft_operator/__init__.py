"""The kopf operator that reconciles EmbeddingFinetune resources into Jobs, status, Events and metrics."""
