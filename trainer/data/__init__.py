"""A dataset file -> the ranks' micro-batches."""
