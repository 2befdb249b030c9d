"""User-facing surfaces: the ``imagery`` CLI and the Gradio rating app. Thin over ``evolve``."""
