"""An A2A client on the reference SDK (a2a-sdk 1.x), delegating to Skein teams.

    python client.py BASE_URL KEY QUICK_TEAM SLOW_TEAM

QUICK_TEAM finishes a run in seconds, SLOW_TEAM does not. The client resolves QUICK_TEAM's
card, sends it a message over the streaming method and follows the stream to the end, reads
the task back, lists the team's tasks, sends SLOW_TEAM a message without waiting and cancels
that task, then tries QUICK_TEAM's card without a key. It prints one JSON object of what it
saw, for the Rust test to check.
"""

import asyncio
import json
import sys

import httpx
from a2a.client import ClientConfig, ClientFactory
from a2a.helpers import new_text_message
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Role,
    SendMessageRequest,
    TaskState,
)
from google.protobuf import json_format


def url_of(base: str, team: str) -> str:
    return f"{base}/a2a/teams/{team}"


def artifact_view(artifact) -> dict:
    parts = []
    for part in artifact.parts:
        if part.HasField("data"):
            parts.append({"data": json_format.MessageToDict(part.data)})
        else:
            parts.append({"text": part.text})
    return {"name": artifact.name, "parts": parts}


async def main(base: str, key: str, quick: str, slow: str) -> dict:
    seen: dict = {}
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        streaming = ClientFactory(ClientConfig(streaming=True, httpx_client=http))
        client = await streaming.create_from_url(url_of(base, quick))
        card = client._card  # the card the factory resolved
        seen["card"] = {
            "name": card.name,
            "interfaces": [
                {"binding": i.protocol_binding, "version": i.protocol_version, "url": i.url}
                for i in card.supported_interfaces
            ],
            "streaming": card.capabilities.streaming,
            "skills": [s.id for s in card.skills],
            "schemes": list(card.security_schemes.keys()),
        }

        # Streaming: the task, then updates, to the end.
        message = new_text_message("Plan the team offsite", role=Role.ROLE_USER)
        kinds, said, artifacts, task_id, context_id, final = [], [], [], None, None, None
        async for event in client.send_message(SendMessageRequest(message=message)):
            kind = event.WhichOneof("payload")
            kinds.append(kind)
            if kind == "task":
                task_id, context_id = event.task.id, event.task.context_id
            elif kind == "status_update":
                status = event.status_update.status
                final = TaskState.Name(status.state)
                if status.state == TaskState.TASK_STATE_WORKING and status.message.parts:
                    said.append(status.message.parts[0].text)
            elif kind == "artifact_update":
                artifacts.append(artifact_view(event.artifact_update.artifact))
        seen["stream"] = {
            "kinds": kinds,
            "said": said,
            "artifacts": artifacts,
            "final": final,
            "task_id": task_id,
            "context_id": context_id,
        }

        task = await client.get_task(GetTaskRequest(id=task_id))
        seen["task"] = {
            "id": task.id,
            "context_id": task.context_id,
            "state": TaskState.Name(task.status.state),
            "artifacts": [artifact_view(a) for a in task.artifacts],
        }

        listed = await client.list_tasks(ListTasksRequest())
        seen["listed"] = {
            "ids": [t.id for t in listed.tasks],
            "total": listed.total_size,
        }

        # Without waiting, to a team that takes its time; then cancelled.
        polling = ClientFactory(
            ClientConfig(streaming=False, polling=True, httpx_client=http)
        )
        slow_client = await polling.create_from_url(url_of(base, slow))
        started = None
        async for event in slow_client.send_message(
            SendMessageRequest(
                message=new_text_message("Take your time", role=Role.ROLE_USER)
            )
        ):
            started = event.task
        cancelled = await slow_client.cancel_task(CancelTaskRequest(id=started.id))
        try:
            await slow_client.cancel_task(CancelTaskRequest(id=started.id))
            again = "accepted"
        except Exception as error:  # the SDK raises the A2A error the code maps to
            again = type(error).__name__
        try:
            await slow_client.get_task(GetTaskRequest(id=task_id))
            foreign = "found"
        except Exception as error:
            foreign = type(error).__name__
        seen["cancel"] = {
            "started": TaskState.Name(started.status.state),
            "cancelled": TaskState.Name(cancelled.status.state),
            "again": again,
            "other_teams_task": foreign,
        }

    # Without the key, the card is refused as the REST API refuses.
    async with httpx.AsyncClient(timeout=30) as anonymous:
        try:
            await ClientFactory(ClientConfig(httpx_client=anonymous)).create_from_url(
                url_of(base, quick)
            )
            seen["anonymous"] = "resolved"
        except Exception as error:
            seen["anonymous"] = type(error).__name__
    return seen


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:5]))))
