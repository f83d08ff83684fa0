from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from xenweb.jobs.models import Job
from xenweb.jobs.serializers import job_payload
from xenweb.jobs.visibility import can_view
from xenweb.realtime import job_group
from xenweb.ws_base import CLOSE_NOT_FOUND, LayerJsonWebsocketConsumer


def _job(job_id: int) -> Job | None:
    return Job.objects.select_related("owner").filter(pk=job_id).first()


@database_sync_to_async
def _visible(user: Any, job_id: int) -> bool:
    job = _job(job_id)
    return job is not None and can_view(user, job)


@database_sync_to_async
def _payload(job_id: int) -> dict | None:
    job = _job(job_id)
    return job_payload(job) if job is not None else None


class JobConsumer(LayerJsonWebsocketConsumer):
    """`/ws/jobs/<id>/`: the job's current record on connect, then every update; only for
    users who may see the job (xenweb.jobs.visibility), others get 4404 as for no job."""

    permission = "jobs.view_job"

    async def connect(self) -> None:
        user = await self.admit()
        if user is None:
            return
        job_id = int(self.scope["url_route"]["kwargs"]["job_id"])
        if not await _visible(user, job_id):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        # Join before reading the row, so no update falls between the snapshot and the stream.
        await self.join(job_group(job_id))
        payload = await _payload(job_id)
        if payload is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.accept()
        await self.send_json({"type": "job.update", "job": {**payload, "seq": 0}})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Clients only listen; anything they send is ignored."""

    async def job_update(self, event: dict[str, Any]) -> None:
        await self.send_json(event)
