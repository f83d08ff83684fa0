"""Guests (libvirt domains): the cached inventory, creation, lifecycle actions and devices at
the top level, and one subpackage per concern: console/ (text and VNC consoles),
migration/ (preflight, migration, evacuation), snapshots/, placement/ (conflict sets, disk
exclusivity, automatic placement) and api/ (every REST view and the app's API routes).
docs/architecture.md says which may import which.
"""
