"""An A2A peer for Skein's tests, built on the reference SDK (a2a-sdk 1.x).

    python agent.py MODE PORT [--compat | --v03] [--send-delay-ms N]

MODE
  echo   answers each message with a Message: "<name> heard: <last line>"
  task   answers with a Task that completes on the client's second GetTask, its
         artifact "task done: <last line>"
  fail   answers with a Task that fails, saying why in its status message

--compat also serves A2A 0.3 (message/send, tasks/get, tasks/cancel) and says so in the card.
--v03    serves A2A 0.3 only, as an older agent does.
--send-delay-ms holds back the answer to a send that long, after the task is made.

It serves its card at /.well-known/agent-card.json and JSON-RPC at / on 127.0.0.1:PORT,
and prints every JSON-RPC request it receives to stdout as one JSON line, so that the
test can see what Skein sent.
"""

import argparse
import asyncio
import json
import sys

import uvicorn
from a2a.helpers import new_text_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Task,
    TaskState,
    TaskStatus,
)
from starlette.applications import Starlette

FINISHED = {
    TaskState.TASK_STATE_COMPLETED,
    TaskState.TASK_STATE_FAILED,
    TaskState.TASK_STATE_CANCELED,
    TaskState.TASK_STATE_REJECTED,
}
# How long a send's answer is held back (--send-delay-ms), in seconds.
SEND_DELAY = 0.0

# Task id -> set when the client has asked about the task often enough.
RELEASED: dict[str, asyncio.Event] = {}


def released(task_id: str) -> asyncio.Event:
    return RELEASED.setdefault(task_id, asyncio.Event())


def last_line(context: RequestContext) -> str:
    lines = [line for line in context.get_user_input().splitlines() if line.strip()]
    return lines[-1] if lines else ""


class Executor(AgentExecutor):
    def __init__(self, mode: str, name: str):
        self.mode = mode
        self.name = name

    async def execute(self, context: RequestContext, queue: EventQueue) -> None:
        said = last_line(context)
        if self.mode == "echo":
            await queue.enqueue_event(
                new_text_message(f"{self.name} heard: {said}", context_id=context.context_id)
            )
            return
        # A task's first event must be the task itself.
        await queue.enqueue_event(
            context.current_task
            or Task(
                id=context.task_id,
                context_id=context.context_id,
                status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
                history=[context.message],
            )
        )
        updater = TaskUpdater(queue, context.task_id, context.context_id)
        await updater.start_work()
        if self.mode == "fail":
            await updater.failed(
                new_text_message(
                    "cannot plan this: no venue is free",
                    context_id=context.context_id,
                    task_id=context.task_id,
                )
            )
            return
        await asyncio.wait_for(released(context.task_id).wait(), 60)
        await updater.add_artifact([new_text_part(f"task done: {said}")], name="result")
        await updater.complete()

    async def cancel(self, context: RequestContext, queue: EventQueue) -> None:
        updater = TaskUpdater(queue, context.task_id, context.context_id)
        await updater.cancel()


class Handler(DefaultRequestHandler):
    """Sends return at once; a task completes on its second GetTask."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked: dict[str, int] = {}

    async def on_message_send(self, params, context):
        params.configuration.return_immediately = True
        answer = await super().on_message_send(params, context)
        # The task exists now; its id reaches the client only after the delay.
        await asyncio.sleep(SEND_DELAY)
        return answer

    async def on_get_task(self, params, context):
        self.asked[params.id] = self.asked.get(params.id, 0) + 1
        if self.asked[params.id] >= 2:
            released(params.id).set()
            for _ in range(100):
                task = await super().on_get_task(params, context)
                if task is None or task.status.state in FINISHED:
                    return task
                await asyncio.sleep(0.02)
        return await super().on_get_task(params, context)


class Record:
    """Prints each JSON-RPC request body as one line, then passes it on."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        print(json.dumps({"headers": headers, "body": json.loads(body or b"null")}), flush=True)
        given = False

        async def replay():
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["echo", "task", "fail"])
    parser.add_argument("port", type=int)
    parser.add_argument("--compat", action="store_true")
    parser.add_argument("--v03", action="store_true")
    parser.add_argument("--send-delay-ms", type=int, default=0)
    args = parser.parse_args()
    global SEND_DELAY
    SEND_DELAY = args.send_delay_ms / 1000

    name = {"echo": "Echo", "task": "Tasker", "fail": "Failer"}[args.mode]
    url = f"http://127.0.0.1:{args.port}/"
    old = AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="0.3")
    current = AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")
    interfaces = [old] if args.v03 else [current, old] if args.compat else [current]
    card = AgentCard(
        name=name,
        description=f"Skein test peer ({args.mode})",
        version="1.0.0",
        supported_interfaces=interfaces,
        capabilities=AgentCapabilities(streaming=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id=args.mode, name=args.mode, description=args.mode, tags=["test"])],
    )
    store = InMemoryTaskStore()
    handler = Handler(agent_executor=Executor(args.mode, name), task_store=store, agent_card=card)
    routes = create_agent_card_routes(card) + create_jsonrpc_routes(
        handler, rpc_url="/", enable_v0_3_compat=args.compat or args.v03
    )
    print(f"listening on {url}", file=sys.stderr, flush=True)
    uvicorn.run(Record(Starlette(routes=routes)), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
