"""Watching a fit: observers, progress, memory, reports and plots."""
