"""The input layer: flow files of any syntax (readers), what their records mean (formats),
the model's input spec (flowspec), cleaning, and packet captures to flows (extract).
"""
