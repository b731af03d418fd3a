"""An MCP server for Skein's tests, built on the reference SDK (mcp 2.x, MCPServer: the
FastMCP of mcp 1.x), over streamable HTTP.

    python server.py PORT [--token TOKEN]

Tools: `add` (two numbers), `note_put` / `note_get` (a small notes store), `slow` (sleeps
that many seconds, then answers), `explode` (raises), `shout` (upper-cases its text). With
--token, every request must carry `Authorization: Bearer TOKEN` (else 401).

Serves MCP at /mcp on 127.0.0.1:PORT and prints one JSON line per HTTP request it receives
to stdout: {"method", "path", "headers", "body"}, so that a test can see what Skein sent.
"""

import argparse
import asyncio
import json
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

mcp = MCPServer("skein-test-tools")
NOTES: dict[str, str] = {}


@mcp.tool()
def add(a: float, b: float) -> str:
    """Adds two numbers."""
    total = a + b
    return str(int(total)) if total == int(total) else str(total)


@mcp.tool()
def note_put(key: str, text: str) -> str:
    """Keeps a note under a key."""
    NOTES[key] = text
    return f"kept {key}"


@mcp.tool()
def note_get(key: str) -> str:
    """Reads the note kept under a key."""
    if key not in NOTES:
        raise ValueError(f"no note named {key}")
    return NOTES[key]


@mcp.tool()
async def slow(seconds: float) -> str:
    """Waits that many seconds, then answers."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@mcp.tool()
def explode() -> str:
    """Always fails."""
    raise RuntimeError("the tool exploded on purpose")


@mcp.tool()
def shout(text: str) -> str:
    """Repeats the text in capitals, as long as it is."""
    return text.upper()


def logged(app, token):
    """Prints each HTTP request (headers and body) and checks the bearer token."""

    async def wrapper(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        print(
            json.dumps(
                {
                    "method": scope["method"],
                    "path": scope["path"],
                    "headers": headers,
                    "body": body.decode(errors="replace"),
                }
            ),
            flush=True,
        )
        if token is not None and headers.get("authorization") != f"Bearer {token}":
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await app(scope, replay, send)

    return wrapper


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--token")
    args = parser.parse_args()
    app = mcp.streamable_http_app(streamable_http_path="/mcp")
    uvicorn.run(logged(app, args.token), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    sys.exit(main())
