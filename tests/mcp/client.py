"""An MCP client on the reference SDK (mcp 2.x), handing work to a Skein team.

    python client.py MCP_URL KEY TEAM

Over streamable HTTP with the key as a bearer token, it lists the tools and the teams,
starts TEAM on an objective, follows the run with get_collaboration (wait_seconds, with a
progress callback) until it has ended, reads its summary, outcome and transcript, tries a
team that does not exist, then tries to connect without a key. It prints one JSON object of
what it saw, for the Rust test to check.
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def client(url: str, key: str | None) -> Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    http = httpx2.AsyncClient(headers=headers, timeout=60)
    return Client(streamable_http_client(url, http_client=http))


async def main(url: str, key: str, team: str) -> dict:
    seen: dict = {"progress": []}

    async def progress(done: float, total: float | None, message: str | None) -> None:
        seen["progress"].append({"done": done, "total": total, "message": message})

    async with client(url, key) as mcp:
        seen["protocol"] = getattr(mcp.session, "protocol_version", None)
        seen["tools"] = sorted(tool.name for tool in (await mcp.list_tools()).tools)
        teams = await mcp.call_tool("list_teams", {})
        seen["teams"] = [t["name"] for t in teams.structured_content["teams"]]

        started = await mcp.call_tool(
            "start_collaboration", {"team": team, "objective": "Plan the offsite"}
        )
        run = started.structured_content
        seen["started"] = {"status": run["status"], "team_id": run["team_id"]}
        polls = 0
        while True:
            polls += 1
            now = await mcp.call_tool(
                "get_collaboration",
                {"id": run["id"], "wait_seconds": 5, "transcript": True},
                progress_callback=progress,
            )
            view = now.structured_content
            if view["status"] != "running" and view.get("summary") or polls > 20:
                break
        seen["finished"] = {
            "id": view["id"],
            "status": view["status"],
            "end_reason": view["end_reason"],
            "summary": view["summary"],
            "outcome": view["outcome"],
            "transcript": [f"{line['sender']}: {line['content']}" for line in view["transcript"]],
            "polls": polls,
        }

        missing = await mcp.call_tool(
            "start_collaboration", {"team": "nobody", "objective": "Plan"}
        )
        seen["missing"] = {"is_error": missing.is_error, "content": missing.structured_content}

    try:
        async with client(url, None) as anonymous:
            await anonymous.list_tools()
        seen["anonymous"] = "connected"
    except BaseException as error:  # the SDK raises the HTTP refusal, maybe in a group
        seen["anonymous"] = type(error).__name__
    return seen


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:4]))))
