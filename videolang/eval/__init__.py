"""eval stage: metrics (`videolang.eval.metrics`), re-exported here as the public entry points."""

from videolang.eval.metrics import (
    MetricInputError,
    bleu4,
    captioning_metrics,
    cider_d,
    confusion_matrix,
    recognition_metrics,
    retrieval_metrics,
    retrieval_metrics_from_embeddings,
    retrieval_ranks,
    retrieval_ranks_from_embeddings,
    script_field_accuracy,
    segmentation_metrics,
    summarize_ranks,
)

__all__ = [
    "MetricInputError",
    "bleu4",
    "captioning_metrics",
    "cider_d",
    "confusion_matrix",
    "recognition_metrics",
    "retrieval_metrics",
    "retrieval_metrics_from_embeddings",
    "retrieval_ranks",
    "retrieval_ranks_from_embeddings",
    "script_field_accuracy",
    "segmentation_metrics",
    "summarize_ranks",
]
