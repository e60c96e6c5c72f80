"""Hyper-parameter search with Keras Tuner, built on the training spine (`keras_cifar.training`).

`space` declares what may change per architecture family, `hypermodel` turns a trial into a spine training run,
`search` and `launch` are the entry points (one process, or a chief and workers), `results` writes the outputs.
"""
