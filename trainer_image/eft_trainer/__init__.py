"""The trainer: from a corpus in S3 to a published, measured embedding model."""
