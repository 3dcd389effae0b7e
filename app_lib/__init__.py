"""Shared logic of the Streamlit app (pages stay thin; see docs/DESIGN.md section 4).

- registry: where models come from (shipped, trained in the app, uploaded); no Streamlit.
- analysis: small computations around crc_core for the pages (uploaded images, margin lines, spectra).
- jobs: a training run in a worker thread with progress events and a real stop button; no Streamlit.
- ui: Streamlit glue: page set-up and shared sidebar (model picker, device, dataset), caches, the heavy-job
  lock, readable errors.
"""
