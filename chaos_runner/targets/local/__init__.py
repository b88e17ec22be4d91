"""The embedded local target: demo replicas, their supervisor and the TCP fault proxy.

`driver.LocalTarget` is what the runner uses; `service` and `proxy` also run as their own
processes (python -m ...), so this package imports nothing: a replica or the proxy must
start fast, and must not pull in the runner.
"""
