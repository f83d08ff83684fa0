"""P2V: a running physical Linux server becomes a guest, over SSH, with verified disk copies.

ssh.py talks to the source (P2V's own key and known_hosts, argument lists); address.py
keeps it away from enrolled hosts and the appliance itself;
inventory.py reads what the source has and proposes a guest; reader.py is the small
program the source's python3 runs to stream a disk; copy.py writes that stream into a
new volume (resumable, sparse); verify.py compares the volume with the source's
checksums; job.py runs it all as one job; api.py is the thin REST layer.
"""
