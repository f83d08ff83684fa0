from celery import shared_task


@shared_task(name="hosts.tasks.sample_metrics", ignore_result=True)
def sample_metrics() -> dict[str, int]:
    """Beat: one bulk performance read per host (see hosts.metrics)."""
    from hosts.metrics import sample_all

    return sample_all()
