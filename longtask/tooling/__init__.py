"""Tooling around the product, apart from its contract: the local stack launcher, the demo,
the corpus generator, the codec server, the live view, and servers and worker processes for
tests and benchmarks."""
