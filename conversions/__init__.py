"""Conversions: whole machines into guests and back (V2V import and export, P2V).

This app sits above guests and storage and uses both; nothing below it imports it. Only
the project's root wiring (xenweb/urls.py, xenweb/api_urls.py) names it.
"""
