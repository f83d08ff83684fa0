from celery import shared_task


# The name is the one the task had in hosts/tasks.py: the beat schedule (settings) and
# messages already queued by a beat of the previous version name it.
@shared_task(name="hosts.tasks.sample_metrics", ignore_result=True)
def sample_metrics() -> dict[str, int]:
    """Beat: one bulk performance read per host (see inventory.metrics)."""
    from inventory.metrics import sample_all

    return sample_all()


@shared_task(name="inventory.tasks.reconcile_inventory", ignore_result=True)
def reconcile_inventory() -> dict[str, str]:
    """Beat: every enrolled host probed and its inventory re-read (see inventory.reconcile),
    so that an appliance running without the watcher still converges."""
    from inventory.reconcile import reconcile_all

    return reconcile_all()
