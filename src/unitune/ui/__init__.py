"""The web UI (extra `unitune[ui]`): tune once on an image, then edit it interactively in the browser.

`session.py` holds the actions and per-session state (no gradio); `app.py` builds the gradio Blocks.
"""

from .app import build_app, launch

__all__ = ["build_app", "launch"]
