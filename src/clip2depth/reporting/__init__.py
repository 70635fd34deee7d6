"""Run reports: curves, sample grids and markdown summaries."""
