"""Reports over run directories: a Markdown page, a CSV table and learning-curve plots."""
