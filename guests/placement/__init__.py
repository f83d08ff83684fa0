"""Which guests may run where, and with whom: the rules the guest core checks when a guest
starts, is created, gets a disk or migrates.

conflicts.py: conflict sets, labels whose guests never share a physical host;
exclusivity.py: a volume not marked shareable is never attached writable to two running
guests; automatic.py: automatic placement, the host with the most free memory that may run
the guest; views.py: the labels and conflict-set pages. It needs only guests' models.
"""
