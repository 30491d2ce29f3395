"""The one exception of the data layer."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset on disk (or in memory) does not match what the loader expects.

    Raised before any training starts. The message always names the file involved, the offending entry (its index
    and content) when there is one, and how to fix the problem. It subclasses `ValueError` so that callers that
    already catch bad input keep working.
    """
