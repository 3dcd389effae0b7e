"""Streamlit-side helpers of the app (pages import them; crc_core never does).

Importing the whole ``crc_core`` package here, before any page touches one of its submodules, matters: Streamlit
runs each browser session's script in its own thread, and two sessions opening their first pages at once would
otherwise import ``crc_core.bounds`` in one thread while another is still running ``crc_core/__init__`` — Python
then hands out a partially initialised module ("cannot import name 'Bounds' from partially initialized module"),
or detects a deadlock. A plain ``import crc_core`` waits for a package another thread is initialising; importing
a submodule while the package itself is half-initialised does not. Every page imports ``app_lib`` first.
"""

import crc_core  # noqa: F401  (whole package first; see above)
