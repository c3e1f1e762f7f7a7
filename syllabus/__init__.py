"""syllabus: the classic experiments of a deep-learning course, run end to end."""

__version__ = "0.1.0"
