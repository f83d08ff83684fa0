"""Moving guests between hosts: one guest (migration) or every running guest of a host
(evacuation).

preflight.py names every reason a guest cannot move to a host; services.py starts a
migration after a passing preflight; job.py is the migration job (checked again, then
live, paused, offline or cold), watch.py reads its statistics beside it and recovery.py
cleans up after a worker that died. evacuation.py moves a host's guests one migration job
after the other; evacuation_views.py is the host page's button. The REST views are in
guests.api.migration.
"""
