"""WGSY: teach a vision-language model to recognise genetic syndromes from facial photographs.

The library behind the notebook series. Each module is one concern of the pipeline; notebooks call
one function per step.
"""

__version__ = "0.1.0"
