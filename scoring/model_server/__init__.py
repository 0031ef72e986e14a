"""A TF-Serving-compatible model endpoint for machines without TF Serving.

Speaks TF Serving's gRPC ``PredictionService``/``ModelService`` and REST v1 API
over a model directory in TF Serving's layout, serving the latest version and
picking up new ones as they appear (``fraud model-server``).
"""
