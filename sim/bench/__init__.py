"""``tokensim bench``: each bench in a file of its own, all timed by :func:`sim.bench.timing.timed`.

- :mod:`sim.bench.links`: the analog link and the digital link against chains of Sionna's stock blocks;
- :mod:`sim.bench.decoders`: the LDPC TB decoders, and the decoder-only Mbit/s per core;
- :mod:`sim.bench.abstraction`: the PHY abstraction's user-slots per second.
"""
