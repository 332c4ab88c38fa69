"""The ``eft`` command: validate, render and run EmbeddingFinetune resources."""
