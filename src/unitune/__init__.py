"""unitune: edit an image from a text description by briefly fine-tuning a diffusion model on it."""

__version__ = "0.1.0"
