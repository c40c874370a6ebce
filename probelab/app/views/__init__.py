"""The app's page scripts (``st.Page`` runs each file as a script; this file only makes the folder a
package so the scripts ship in the wheel)."""
