"""SAM's modules: the ViT image encoder, the prompt encoder, the mask decoder with its two-way
transformer, the ``Sam`` module that joins them, and the size presets (``config``)."""
