"""The dashboard's pages; each is a script Streamlit runs (st.Page), not a module to import."""
