"""Pure metric functions: score matrices and label sequences in, numbers out (no models, no files)."""

from videolang.eval.metrics.captioning import bleu4, captioning_metrics, cider_d, script_field_accuracy, tokenize
from videolang.eval.metrics.errors import MetricInputError
from videolang.eval.metrics.recognition import confusion_matrix, recognition_metrics
from videolang.eval.metrics.retrieval import (
    retrieval_metrics,
    retrieval_metrics_from_embeddings,
    retrieval_ranks,
    retrieval_ranks_from_embeddings,
    summarize_ranks,
)
from videolang.eval.metrics.segmentation import segmentation_metrics

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
    "tokenize",
]
