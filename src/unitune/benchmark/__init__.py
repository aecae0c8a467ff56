"""The edit benchmark on the shapes world: edits with known right answers, every method side by side.

edits.py (the edit set), metrics.py (scores of one output), methods.py (prompt only, SDEdit, UniTune full
and LoRA), selection.py (best fixed setting, oracle), report/ (markdown and plots), run.py (the run).
"""
