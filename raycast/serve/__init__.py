"""Serving: the Ray Serve application behind ``raycast serve``, and offline scoring behind ``raycast predict``.

The request path of ``POST /v1/predict``, in the order a request meets it:

    http_api.py      request and response bodies, what each route does (PredictionService), the FastAPI app
    feature_rows.py  a request's model inputs: stored feature rows or the request's candles, as normalized windows
    deployments.py   the ingress, ensemble and base-model deployments, and how they load a model version
    coalescer.py     the Coalescer: how each stage batches concurrent requests

Around it:

    app.py           ServeArgs and build_app, the typed builder serve_config.yaml points at
    run.py           ``raycast serve``: start the application, say where it answers, stop it cleanly
    offline.py       offline scoring of the whole universe with Ray Data (``raycast predict``)
    live_features.py which feature dataset a model can be fed, and the replica's watcher that swaps in new days
    prediction_log.py every answer logged as Parquet, off the request path, where ``raycast monitor`` reads it
"""
