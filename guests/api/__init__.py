"""guests' REST API: every viewset and serializer of the app, one module per concern
(guests.py: the guests and their actions, snapshots.py: the snapshot actions GuestViewSet
mixes in, migration.py: migration, evacuation and conflict sets), and urls.py, the routes
(included by xenweb/api_urls.py).

The rule: REST views live here, the concern subpackages (guests.snapshots,
guests.migration, ...) hold what they call; nothing below this package imports it.
"""
