"""echo_core: media → tokens → sieve → cache → answers, on the Qwen2.5-Omni thinker.

The core is pure: it takes numpy arrays and torch tensors in and gives tokens and text
out. It never imports network or storage libraries.
"""

__version__ = "0.1.0"
