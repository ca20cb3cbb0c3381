"""Ingestion: load daily OHLCV bars from a source, validate them, and publish a versioned market dataset.

Sources: :mod:`raycast.data.synthetic` (a seeded universe with a planted signal), :mod:`raycast.data.sample`
(real bars shipped offline by ``bokeh-sampledata``) and :mod:`raycast.data.files` (the user's CSV/Parquet).
:mod:`raycast.data.validate` turns a raw frame into the canonical bars frame plus the rejected rows, and
:mod:`raycast.data.store` publishes and reads the dataset. :func:`raycast.data.ingest.ingest` ties them together.

Only the exception type is defined here, so importing the package stays cheap.
"""

from raycast.data.errors import DataError

__all__ = ["DataError"]
