"""Data: readers -> normalised examples -> rendered (ids, loss mask) -> packed/collated batches."""
