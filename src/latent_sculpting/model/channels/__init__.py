"""Side channels beside the flow: boosted trees, a random forest, benign prototypes,
Deep SVDD; the trees as validated arrays.
"""
