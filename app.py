"""CRC Explorer (run with `make run`): the router. Every page is a script in pages/, listed once in
app_lib.navigation.PAGES; each keeps the URL path it had before st.navigation (/Certify, /Train, …)."""

import streamlit as st

from app_lib import navigation

st.navigation([st.Page(p.path, title=p.label, icon=p.icon, url_path=p.url_path or None, default=p is navigation.HOME)
               for p in navigation.PAGES], position="hidden").run()  # the sidebar draws its own links
