"""Serving: the Ray Serve application (``app.build_app``), ``raycast serve`` (``run``) and ``raycast predict`` (``batch``).

    app.py          ServeArgs and the typed builder serve_config.yaml points at
    deployments.py  the base-model, ensemble and ingress deployments
    api.py          the versioned HTTP API (FastAPI); service.py is what it does, schemas.py its bodies
    features.py     stored feature rows cached per replica; candles.py windows from request candles
    models.py       loading registry versions; batching.py adaptive batching for the async stages
    batch.py        offline scoring of the whole universe with Ray Data
    demo.py         an untrained registered ensemble for tests and benchmarks
"""
