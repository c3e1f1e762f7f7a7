"""Datasets: embedded generators, shipped samples and loaders of the real sets.

The catalogue behind ``syllabus data list`` and ``syllabus data prepare`` is
`syllabus.data.catalog`; this package imports nothing itself, so a run pays only for the
loaders it uses.
"""
