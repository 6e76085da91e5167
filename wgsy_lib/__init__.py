"""WGSY: teach a vision-language model to recognise genetic syndromes from facial photographs.

The library behind the notebook series. Each module is one concern of the pipeline; notebooks call
one function per step.
"""

import os as _os

__version__ = "0.1.0"

if _os.environ.get("WGSY_HEADLESS", "") not in ("", "0", "false"):
    # Headless papermill runs have no browser to draw tqdm's notebook widget, which then leaves a
    # frozen "0%" bar in the executed notebook. Plain text bars (rate-limited by TQDM_MININTERVAL,
    # set by wgsy_lib.runner) stay readable. This runs before any module imports tqdm.auto.
    import tqdm.auto as _tqdm_auto
    import tqdm.std as _tqdm_std

    _tqdm_auto.tqdm = _tqdm_std.tqdm
    _tqdm_auto.trange = _tqdm_std.trange
