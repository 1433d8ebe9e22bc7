"""A UILayout stand-in that records the texts a panel draws (panels' draw() run headless)."""
from types import SimpleNamespace


class Recorder:
    def __init__(self):
        self.texts = []

    def __getattr__(self, name):
        def call(*args, **kwargs):
            if kwargs.get("text"):
                self.texts.append(kwargs["text"])
            if name in ("row", "column", "box", "split"):
                return self
            return SimpleNamespace(how="", filepath="")   # an operator's properties
        return call
