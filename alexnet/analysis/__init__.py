"""Per-layer analysis: output shapes, parameters, FLOPs and activation memory of any `nn.Module`. Imports only
torch."""

from alexnet.analysis.summary import LayerRow, Summary, format_summary, summarize

__all__ = ["LayerRow", "Summary", "format_summary", "summarize"]
