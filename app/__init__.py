"""Streamlit app: presentation only (widgets, layout, caching of handles); the science is in `analysis`."""
