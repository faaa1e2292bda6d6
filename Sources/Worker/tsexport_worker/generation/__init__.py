"""Generation outside Python: the encoder/decoder split, the cached-generation artifacts, their key/value cache and
the greedy loop that runs them."""
