"""Records and segments as bytes, pure: the record line format and ULIDs (``record``),
the compressed store-segment format (``segfile``), merging and deduplicating sorted
record runs (``merge``). No I/O beyond what a caller hands in; no trio."""
