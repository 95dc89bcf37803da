"""A local TF-Serving-compatible model server: the REST subset Skewfree uses, for one machine.

It stands in for ``tensorflow/serving`` where no TF Serving binary exists: same
paths, JSON bodies, status codes, version policies and model-config-file
semantics, so code tested against it works against the real server.
"""
