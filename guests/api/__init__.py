"""guests' REST API: every viewset and serializer of the app, one module per concern
(guests.py: the guests and their actions, snapshots.py: the snapshot actions GuestViewSet
mixes in, migration.py: migration, evacuation and conflict sets).

The rule: REST views live here, the concern subpackages (guests.snapshots,
guests.migration, ...) hold what they call; nothing below this package imports it.
"""
