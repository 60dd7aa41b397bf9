"""The bottom layer: what every package shares and nothing of the project's own.

`errors` holds the one root of the errors a user can cause (`UserError`); `io` the atomic
writes, safe YAML reads and figure files. Both import nothing of `nas`, `lut` or `supernets`
(tests/test_layering.py), so the model package `supernets` can use them without depending on
the rest of `nas`; ``nas/__init__.py`` stays empty so that importing ``nas.core`` loads nothing else."""
