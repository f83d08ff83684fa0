"""Guest snapshots: what kind a guest's disks allow, taking, reverting and deleting them.

plan.py says per guest which kind applies (internal, external, LVM, or none and why);
services.py lists snapshots and takes, reverts and deletes them (quick changes now, slow
ones as jobs); jobs.py holds the job bodies; views.py is the snapshot section of the guest
page. The REST actions are in guests.api.snapshots.
"""
