"""Putting a fitted detector to work: the one scorer, its engines (local, Ray), the HTTP
service, ONNX export and the files it writes.
"""
