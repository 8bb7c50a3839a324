"""The tuning log as data: record configs, their lineage, config diffs and the article's numbers."""
