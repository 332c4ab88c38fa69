"""The public API of the EmbeddingFinetune operator: the typed spec, the schema, and the contracts between parts.

Pure: imports none of kopf, kubernetes, boto3 or torch (an import-linter contract holds it to that).
"""

from eft_api.spec import (
    API_GROUP,
    API_VERSION,
    KIND,
    PLURAL,
    EmbeddingFinetuneSpec,
    InvalidSpec,
    parse_resource,
    parse_spec,
)

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "KIND",
    "PLURAL",
    "EmbeddingFinetuneSpec",
    "InvalidSpec",
    "parse_resource",
    "parse_spec",
]
