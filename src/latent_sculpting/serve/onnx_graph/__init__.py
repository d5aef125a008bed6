"""The parts of the ONNX export (:mod:`latent_sculpting.serve.export`), each a function that adds
its nodes to a :class:`~latent_sculpting.serve.onnx_graph.builder.GraphBuilder`: the builder and
its primitives (:mod:`.builder`), the preprocessing and the networks (:mod:`.network`), the side
channels (:mod:`.channels`), the tails and the score rules (:mod:`.rules`)."""
