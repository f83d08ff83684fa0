"""Kinds of guests' jobs the guest core must recognise, kept below the concern that starts
them: the inventory leaves a guest that a migration job is moving to that job
(guests.inventory.migrating_uuids), and guests.migration starts those jobs."""

MIGRATE_KIND = "guest.migrate"
