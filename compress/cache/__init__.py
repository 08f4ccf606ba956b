"""The stage cache: every stage's ONNX file, kept under a key that covers everything it depends
on, so that a run whose first stages match an earlier run's reuses them (compress.cache.keys
computes the keys, compress.cache.store keeps the entries)."""
