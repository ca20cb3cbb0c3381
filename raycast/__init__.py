"""raycast: deep next-day-return models over many tickers, trained and served on Ray.

The package follows the pipeline: ``data`` -> ``features`` -> ``models`` -> ``train`` -> ``evaluate`` ->
``tune`` -> ``serve``. ``config`` holds every setting; ``cli`` is the ``raycast`` command.
"""

__version__ = "0.1.0"
