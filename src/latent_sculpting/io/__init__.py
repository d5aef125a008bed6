"""The input layer: flow files of any syntax (readers), what their records mean (formats),
the model's input spec (flowspec), fitted on training records (fitting) and applied to any
records (encoding), cleaning, and packet captures to flows (extract).
"""
