"""The web UI (extra `unitune[ui]`): tune once on an image, then edit it interactively in the browser.

`session.py` holds the actions and per-session state and does not need gradio; `app.py` builds the
gradio Blocks (`build_app`) and serves them (`launch`).
"""
