"""Seeing the tokens: per-token dumps, a metrics log, the HTML heatmap and the training plots."""

from tokrl.diagnostics.metrics_log import METRICS, MetricsLogCallback, read_metrics
from tokrl.diagnostics.token_dump import (
    RUN_INFO,
    TOKEN_VALUES,
    TokenDumpCallback,
    decode_pieces,
    dump_tokens,
    read_token_values,
    token_records,
)

__all__ = ["METRICS", "RUN_INFO", "TOKEN_VALUES", "MetricsLogCallback", "TokenDumpCallback", "decode_pieces",
           "dump_tokens", "read_metrics", "read_token_values", "token_records"]
