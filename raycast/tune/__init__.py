"""Hyperparameter search with Ray Tune: ``raycast.tune.search.run_search`` is ``raycast tune``."""
